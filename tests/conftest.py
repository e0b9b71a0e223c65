"""Shared helpers: run lstmcpp and the NumPy reference on the same weights and compare."""

import contextlib
import dataclasses
import functools
import os

import numpy as np
import pytest

try:  # property-based tests: a few hundred examples in CI, thousands with HYPOTHESIS_PROFILE=thorough
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:
    pass

import lstmcpp
from lstmcpp import _core, reference

# Every float32 kernel set this CPU runs; only the one LSTMCPP_ISA forces, when it forces one
# (tools/sanitize.sh runs the tests once under each set: each need not run all of them again).
ISAS = [name for name in _core.isa_names() if _core.isa_supported(name)]
if os.environ.get("LSTMCPP_ISA") in ISAS:
    ISAS = [os.environ["LSTMCPP_ISA"]]


def rel_err(a, b, floor=0.0):
    """max |a - b| / max(max |b|, floor): the error relative to the reference's scale. A floor
    keeps float32 results that cancel down to almost nothing (|y| ~ 1e-7 from O(1) terms, so
    rounding alone is a large fraction of them) from counting as relative error."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max() if b.size else 0.0, floor)
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


TOL = {"float64": 1e-10, "float32": 1e-4}


# The feature grid, as LSTM arguments: each feature alone, then combined. The tests' sizes are odd,
# so no SIMD register or thread slice is full. reference_features() and TORCH_GRID take the parts
# the NumPy reference and torch.nn.LSTM have.
GRID = {
    "plain": dict(),
    "no_bias": dict(bias=False),
    "peepholes": dict(peepholes=True),
    "projection": dict(proj_size=3),
    "cell_clip": dict(cell_clip=0.3),
    "proj_clip": dict(proj_size=3, proj_clip=0.1),
    "two_layers": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "reverse": dict(num_layers=2, reverse=True, peepholes=True),
    "reverse_projection": dict(reverse=True, proj_size=3, cell_clip=0.3, batch_first=True),
    "batch_first": dict(batch_first=True),
    "dropout": dict(num_layers=3, dropout=0.4, seed=3),
    "stacked": dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True),
    "everything": dict(num_layers=2, bidirectional=True, peepholes=True, proj_size=3, cell_clip=0.3,
                       proj_clip=0.1, batch_first=True, dropout=0.25, seed=7),
    # the cell variants (SPEC §7)
    "cifg": dict(coupled_input_forget=True),
    "cifg_everything": dict(coupled_input_forget=True, num_layers=2, bidirectional=True, peepholes=True, proj_size=3,
                            cell_clip=0.3, proj_clip=0.1, batch_first=True, dropout=0.25, seed=7),
    "layer_norm": dict(layer_norm=True),
    "layer_norm_everything": dict(layer_norm=True, num_layers=2, bidirectional=True, peepholes=True, proj_size=3,
                                  cell_clip=0.3, proj_clip=0.1, batch_first=True, dropout=0.25, seed=7),
    "mogrifier": dict(mogrify_rounds=3),
    "mogrifier_everything": dict(mogrify_rounds=4, mogrify_rank=2, num_layers=2, bidirectional=True, peepholes=True,
                                 proj_size=3, cell_clip=0.3, proj_clip=0.1, batch_first=True, dropout=0.25, seed=7),
    "all_variants": dict(coupled_input_forget=True, layer_norm=True, mogrify_rounds=5, mogrify_rank=3, num_layers=2,
                         peepholes=True, cell_clip=0.3, reverse=True),
}
# arguments PyTorch's nn.LSTM has no counterpart for
VARIANTS = {"coupled_input_forget", "layer_norm", "mogrify_rounds"}
ONNX_REFUSES = {"layer_norm", "mogrify_rounds"}
TORCH_GRID = {name: {k: v for k, v in kw.items() if k != "seed"} for name, kw in GRID.items()
              if not ({"peepholes", "cell_clip", "proj_clip", "dropout"} | VARIANTS) & set(kw)}
ONNX_GRID = {name: {k: v for k, v in kw.items() if k not in ("seed", "dropout")} for name, kw in GRID.items()
             if not ({"proj_size", "cell_clip", "proj_clip"} | ONNX_REFUSES) & set(kw)}
QUANTIZED_GRID = list(GRID)  # every scheme quantizes every feature and variant


def reference_features(name):
    """GRID[name]'s architecture as reference.Config arguments (batch_first, dropout and seed are the layer's)."""
    fields = {f.name for f in dataclasses.fields(reference.Config)}
    return {k: v for k, v in GRID[name].items() if k in fields}


def torch_pair(config, dtype, I=6, H=9):
    """A torch.nn.LSTM(I, H, **config) and an lstmcpp.LSTM with its weights."""
    import torch

    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, **config).to(getattr(torch, dtype))
    ours = lstmcpp.LSTM(I, H, dtype=dtype, **config)
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return ref, ours


def torch_inputs(ref, dtype, T=7, B=5, seed=0):
    """x, h0, c0 for a torch.nn.LSTM (in its layout)."""
    rng = np.random.default_rng(seed)
    D = 2 if ref.bidirectional else 1
    P = ref.proj_size or ref.hidden_size
    x = rng.standard_normal((B, T, ref.input_size) if ref.batch_first else (T, B, ref.input_size)).astype(dtype)
    h0 = rng.standard_normal((D * ref.num_layers, B, P)).astype(dtype)
    c0 = rng.standard_normal((D * ref.num_layers, B, ref.hidden_size)).astype(dtype)
    return x, h0, c0


# ------------------------------------------------------------------------------------------------
# finite differences


def numeric_gradient(loss_fn, array, index, eps=1e-6):
    """d loss / d array[index] by a central difference (array is changed and put back)."""
    old = array[index]
    array[index] = old + eps
    plus = loss_fn()
    array[index] = old - eps
    minus = loss_fn()
    array[index] = old
    return (plus - minus) / (2 * eps)


def check_gradients(loss_fn, arrays_and_grads, rng, samples=6, tol=1e-6):
    """Compare analytic gradients with central differences at a few entries of each array."""
    checked = 0
    for name, array, grad in arrays_and_grads:
        for flat in rng.choice(array.size, size=min(samples, array.size), replace=False):
            index = np.unravel_index(flat, array.shape)
            num = numeric_gradient(loss_fn, array, index)
            assert abs(num - grad[index]) <= tol * max(1.0, abs(num)), (name, index, num, grad[index])
            checked += 1
    assert checked > 0


# ------------------------------------------------------------------------------------------------
# kernels, threads and product forms


@contextlib.contextmanager
def core_settings(threads=None, isa=None, whole_team=False, pack_min_rows=None):
    """Run the block with these core settings (None: unchanged), and put every one back after.
    whole_team puts every time loop on the whole thread team, however small the cell (and every
    stream step: no timing of the team against one thread)."""
    before = lstmcpp.get_num_threads(), _core.isa_in_use()
    _core.set_starvation_patience(-1)  # forget a starved team seen before (it would run this block on one thread)
    _core.set_step_tuning(not whole_team)
    try:
        if threads is not None:
            lstmcpp.set_num_threads(threads)
        if isa is not None:
            assert _core.set_isa(isa)
        if whole_team:
            _core.set_min_work_per_thread(1)
        if pack_min_rows is not None:
            _core.set_pack_min_rows(pack_min_rows)
        yield
    finally:
        lstmcpp.set_num_threads(before[0])
        _core.set_isa(before[1])
        _core.set_min_work_per_thread(-1)
        _core.set_pack_min_rows(128)
        _core.set_step_tuning(True)


def on_one_and_two_threads(run, isa=None):
    """[run() on 1 thread, run() on 2], every time loop on the whole team, under `isa`'s kernels."""
    results = []
    for n in (1, 2):
        with core_settings(threads=n, isa=isa, whole_team=True):
            results.append(run())
    return results


def assert_bitwise_equal(a_list, b_list):
    assert len(a_list) == len(b_list)
    for a, b in zip(a_list, b_list):
        assert a.shape == b.shape
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


def run_forward_backward(model, x, dy, lengths=None, state=None):
    """y, h_n, c_n, dx, dh_0, dc_0 and copies of every gradient, from zeroed gradients."""
    model.zero_grad()
    y, (h, c), cache = model.forward(x, state, lengths=lengths)
    dx, (dh0, dc0) = model.backward(cache, dy)
    return [y, h, c, dx, dh0, dc0] + [g.copy() for g in model.grads.values()]


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once under each float32 kernel set this CPU supports."""
    with core_settings(isa=request.param):
        yield request.param


@pytest.fixture(params=["in_place", "packed"])
def products(request):
    """Runs the test twice: the per-step products reading the weights in place, then reading
    them packed per thread (each call's choice between the two normally depends on its size)."""
    with core_settings(pack_min_rows=1 << 40 if request.param == "in_place" else 1):
        yield request.param


@pytest.fixture
def whole_team():
    """Every time loop on the whole thread team (of two), however small the cell."""
    with core_settings(threads=2, whole_team=True):
        yield


def make_inputs(model, T=9, B=4, with_state=True, with_lengths=True, seed=0):
    """x (in the model's layout), a random initial state and random lengths (the first the longest)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, model.input_size) if model.batch_first else (T, B, model.input_size))
    DL = model.num_directions * model.num_layers
    state = None
    if with_state:
        state = (rng.standard_normal((DL, B, model.output_size)), rng.standard_normal((DL, B, model.hidden_size)))
    lengths = rng.integers(1, T + 1, size=B) if with_lengths else None
    if with_lengths:
        lengths[0] = T
    return x.astype(model.dtype), state, lengths


def scale_weights(model, factor):
    for p in model.parameters():
        p *= factor


def to_time_major(a, model, unbatched):
    a = np.asarray(a, np.float64)
    if unbatched:
        return a[:, None, :]
    return a.transpose(1, 0, 2) if model.batch_first else a


def from_time_major(a, model, unbatched):
    if unbatched:
        return a[:, 0]
    return a.transpose(1, 0, 2) if model.batch_first else a


def compare_with_reference(model, x, state=None, lengths=None, seed=0, training=True):
    """Forward and backward through ``model`` and the reference; returns {what: relative error}."""
    rng = np.random.default_rng(seed)
    unbatched = np.ndim(x) == 2
    y, (h_n, c_n), cache = model.forward(x, state, lengths=lengths, training=training)
    dy = rng.standard_normal(y.shape)
    dh = rng.standard_normal(h_n.shape)
    dc = rng.standard_normal(c_n.shape)
    model.zero_grad()
    dx, (dh0, dc0) = model.backward(cache, dy, (dh, dc))

    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    x_tm = to_time_major(np.asarray(x, model.dtype), model, unbatched)
    st = [None, None] if state is None else [np.asarray(s, model.dtype).astype(np.float64) for s in state]
    if unbatched and state is not None:
        st = [s[:, None, :] for s in st]
    lens = None if lengths is None else np.atleast_1d(lengths)
    masks = [m.astype(np.float64) for m in cache.dropout_masks] or None
    yr, (hr, cr), rcache = reference.forward(reference.Config.of(model), params, x_tm, st[0], st[1], lens, masks)
    dy_tm = to_time_major(dy, model, unbatched)
    dh_r = dh[:, None, :] if unbatched else dh
    dc_r = dc[:, None, :] if unbatched else dc
    dxr, (dh0r, dc0r), grads = reference.backward(rcache, dy_tm, dh_r, dc_r)

    sq = (lambda a: a[:, 0]) if unbatched else (lambda a: a)
    # float32: errors relative to at least 0.01 (see rel_err); float64 logic is checked exactly
    err = functools.partial(rel_err, floor=1e-2 if model.dtype == np.float32 else 0.0)
    errs = {
        "y": err(y, from_time_major(yr, model, unbatched)),
        "h_n": err(h_n, sq(hr)),
        "c_n": err(c_n, sq(cr)),
        "dx": err(dx, from_time_major(dxr, model, unbatched)),
        "dh0": err(dh0, sq(dh0r)),
        "dc0": err(dc0, sq(dc0r)),
    }
    assert set(grads) == set(model.grads)
    for name, g in grads.items():
        errs["grad " + name] = err(model.grads[name], g)
    return errs


def assert_step_by_step_equals_full_sequence(model, tol, T=9, B=3, seed=1):
    """Forward one step per call, carrying the state; backward one step per call, carrying the
    state's gradient: the same outputs and gradients as one call over the whole sequence (a
    one-direction, time-major model)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, model.input_size)).astype(model.dtype)
    y, (h, c), cache = model.forward(x)
    dy = rng.standard_normal(y.shape)
    model.zero_grad()
    dx, (dh0, dc0) = model.backward(cache, dy)
    full_grads = {k: v.copy() for k, v in model.grads.items()}
    state, caches, ys = None, [], []
    for t in range(T):
        yt, state, ct = model.forward(x[t : t + 1], state)
        ys.append(yt)
        caches.append(ct)
    assert rel_err(np.concatenate(ys), y) < tol
    assert rel_err(state[0], h) < tol and rel_err(state[1], c) < tol
    model.zero_grad()
    dstate = None
    for t in reversed(range(T)):
        dxt, dstate = model.backward(caches[t], dy[t : t + 1], dstate)
        assert rel_err(dxt[0], dx[t]) < tol
    assert rel_err(dstate[0], dh0) < tol and rel_err(dstate[1], dc0) < tol
    for k, g in model.grads.items():
        assert rel_err(g, full_grads[k]) < tol, k
