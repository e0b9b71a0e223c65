"""Property-based tests: random shapes, features, lengths, strides and dtypes (C++ equals the
reference); random malformed inputs (a clean ValueError/TypeError, never a crash)."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

import lstmcpp  # noqa: E402

from conftest import ISAS, TOL, core_settings, compare_with_reference


@st.composite
def lstm_cases(draw):
    I = draw(st.integers(1, 19))
    H = draw(st.integers(1, 41))
    proj = draw(st.integers(0, H - 1)) if H > 1 else 0
    config = dict(
        num_layers=draw(st.integers(1, 2)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=proj,
        peepholes=draw(st.booleans()),
        cell_clip=draw(st.sampled_from([None, 0.5, 3.0])),
        proj_clip=draw(st.sampled_from([None, 0.3])) if proj else None,
        dtype=draw(st.sampled_from(["float32", "float64"])),
        seed=draw(st.integers(0, 1000)),
    )
    T, B = draw(st.integers(1, 10)), draw(st.integers(1, 7))
    unbatched = draw(st.booleans()) and B == 1
    input_dtype = draw(st.sampled_from([np.float16, np.float32, np.float64, np.int16]))
    strided = draw(st.booleans())
    with_state = draw(st.booleans())
    with_lengths = draw(st.booleans())
    isa = draw(st.sampled_from(ISAS))
    whole_team = draw(st.booleans())
    return I, H, config, T, B, unbatched, input_dtype, strided, with_state, with_lengths, isa, whole_team


@given(lstm_cases(), st.integers(0, 2**32 - 1))
def test_random_configurations_match_the_reference(case, seed):
    I, H, config, T, B, unbatched, input_dtype, strided, with_state, with_lengths, isa, whole_team = case
    model = lstmcpp.LSTM(I, H, **config)
    rng = np.random.default_rng(seed)
    shape = (T, I) if unbatched else ((B, T, I) if config["batch_first"] else (T, B, I))
    scale = 3 if input_dtype == np.int16 else 1
    big = (scale * rng.standard_normal((2 * shape[0],) + shape[1:])).astype(input_dtype)
    x = big[::2] if strided else big[: shape[0]]  # every other row: a non-contiguous view
    DL, P = model.num_directions * model.num_layers, model.output_size
    state = None
    if with_state:
        state = (rng.standard_normal((DL, P) if unbatched else (DL, B, P)), rng.standard_normal((DL, H) if unbatched else (DL, B, H)))
    lengths = None
    if with_lengths:
        lengths = np.array(rng.integers(1, T + 1)) if unbatched else rng.integers(1, T + 1, size=B)
    with core_settings(isa=isa, whole_team=whole_team):
        errs = compare_with_reference(model, x, state, lengths, seed=seed % 1000)
    assert max(errs.values()) < TOL[config["dtype"]], errs


# ------------------------------------------------------------------------------------------------
# malformed input

dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.bool_, np.complex64, np.uint8, object, "U3"])
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


def arrays(shape, dtype, rng):
    if dtype == object:
        return np.empty(shape, dtype=object)
    if dtype == "U3":
        return np.full(shape, "abc")
    return rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind != "b" else rng.random(shape) < 0.5


@given(shapes, dtypes, st.one_of(st.none(), st.tuples(shapes, shapes)), st.one_of(st.none(), shapes),
       st.sampled_from([np.int64, np.float32, np.int8]), st.booleans(), st.integers(0, 2**32 - 1))
def test_malformed_input_raises_cleanly(x_shape, x_dtype, state_shapes, lengths_shape, lengths_dtype, batch_first, seed):
    model = lstmcpp.LSTM(3, 4, num_layers=2, batch_first=batch_first, seed=0)
    rng = np.random.default_rng(seed)
    x = arrays(x_shape, x_dtype, rng)
    state = None if state_shapes is None else tuple(arrays(s, np.float32, rng) for s in state_shapes)
    lengths = None if lengths_shape is None else rng.integers(-2, 8, lengths_shape).astype(lengths_dtype)
    before = model.state_dict()
    for call in (lambda: model(x, state, lengths=lengths), lambda: model.forward(x, state, lengths=lengths)):
        try:
            out = call()
        except (ValueError, TypeError):
            continue
        # accepted: then it was well formed, and the result has the documented shape
        y = out[0]
        assert y.shape[-1] == 4 and np.isfinite(y).all()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@given(shapes, dtypes, st.integers(0, 2**32 - 1))
def test_malformed_gradients_raise_cleanly(dy_shape, dy_dtype, seed):
    model = lstmcpp.LSTM(3, 4, seed=0)
    y, _, cache = model.forward(np.ones((5, 2, 3), np.float32))
    dy = arrays(dy_shape, dy_dtype, np.random.default_rng(seed))
    try:
        model.backward(cache, dy)
    except (ValueError, TypeError):
        assert not any(g.any() for g in model.grads.values())  # a refused call accumulated nothing
        return
    assert dy_shape == y.shape
