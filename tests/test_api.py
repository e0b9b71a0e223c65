"""The public API: shapes, state dicts, parameter counts, errors, threads and the GIL."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import lstmcpp


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("proj_size", [0, 3])
def test_output_shapes(batch_first, bidirectional, proj_size):
    T, B, I, H, L = 5, 2, 4, 6, 2
    D = 2 if bidirectional else 1
    P = proj_size or H
    m = lstmcpp.LSTM(I, H, L, batch_first=batch_first, bidirectional=bidirectional, proj_size=proj_size)
    x = np.zeros((B, T, I) if batch_first else (T, B, I))
    y, (h, c) = m(x)
    assert y.shape == ((B, T, D * P) if batch_first else (T, B, D * P))
    assert h.shape == (D * L, B, P) and c.shape == (D * L, B, H)
    assert y.dtype == np.float32
    y1, (h1, c1) = m(np.zeros((T, I)))  # unbatched
    assert y1.shape == (T, D * P) and h1.shape == (D * L, P) and c1.shape == (D * L, H)
    _, _, cache = m.forward(x)
    dx, (dh0, dc0) = m.backward(cache, np.ones_like(y))
    assert dx.shape == x.shape and dh0.shape == h.shape and dc0.shape == c.shape


def hand_count(I, H, L=1, D=1, P=0, peep=False, bias=True):
    """The seed's count: per layer and direction 4H(I_l + P) weights, 8H biases, PH projection, 3H peepholes."""
    P_out = P or H
    total = 0
    for layer in range(L):
        I_l = I if layer == 0 else D * P_out
        total += D * (4 * H * (I_l + P_out) + (8 * H if bias else 0) + (P * H if P else 0) + (3 * H if peep else 0))
    return total


@pytest.mark.parametrize(
    "kw,expected",
    [
        (dict(), 4 * 20 * (10 + 20) + 8 * 20),  # 2560
        (dict(bias=False), 4 * 20 * 30),
        (dict(peepholes=True), 2560 + 60),
        (dict(proj_size=5), 4 * 20 * (10 + 5) + 160 + 5 * 20),
        (dict(num_layers=2, bidirectional=True), 2 * 2560 + 2 * (4 * 20 * (40 + 20) + 160)),
        (dict(num_layers=2, bidirectional=True, proj_size=5, peepholes=True), None),
    ],
)
def test_num_parameters_matches_the_hand_count(kw, expected):
    m = lstmcpp.LSTM(10, 20, **kw)
    D = 2 if kw.get("bidirectional") else 1
    count = hand_count(10, 20, kw.get("num_layers", 1), D, kw.get("proj_size", 0), kw.get("peepholes", False), kw.get("bias", True))
    assert m.num_parameters() == count == sum(p.size for p in m.parameters())
    if expected is not None:
        assert m.num_parameters() == expected


def test_peephole_keys_and_state_dict_round_trip():
    m = lstmcpp.LSTM(3, 4, num_layers=2, bidirectional=True, peepholes=True, seed=1)
    sd = m.state_dict()
    assert [k for k in sd if "peephole" in k] == ["weight_peephole_l0", "weight_peephole_l0_reverse", "weight_peephole_l1", "weight_peephole_l1_reverse"]
    assert sd["weight_peephole_l1_reverse"].shape == (3, 4)
    other = lstmcpp.LSTM(3, 4, num_layers=2, bidirectional=True, peepholes=True, seed=2)
    other.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    np.testing.assert_array_equal(m(x)[0], other(x)[0])
    sd["weight_ih_l0"][...] = 0  # state_dict() returns copies: the model is untouched
    assert m.state_dict()["weight_ih_l0"].any()


def test_parameters_are_live_views():
    m = lstmcpp.LSTM(3, 4, dtype="float64", seed=0)
    x = np.ones((2, 1, 3))
    before = m(x)[0]
    for p in m.parameters():
        p *= 0.5
    assert not np.allclose(m(x)[0], before)


def test_seed_makes_initialisation_and_dropout_deterministic():
    a = lstmcpp.LSTM(3, 4, num_layers=2, dropout=0.5, seed=11)
    b = lstmcpp.LSTM(3, 4, num_layers=2, dropout=0.5, seed=11)
    x = np.ones((4, 2, 3))
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])
    assert not np.array_equal(a.forward(x)[0], a.forward(x, training=False)[0])


def test_forget_bias_is_added_to_the_forget_block():
    m0 = lstmcpp.LSTM(3, 4, seed=5)
    m1 = lstmcpp.LSTM(3, 4, seed=5, forget_bias=1.0)
    d = m1.state_dict()["bias_ih_l0"] - m0.state_dict()["bias_ih_l0"]
    np.testing.assert_allclose(d, np.r_[np.zeros(4), np.ones(4), np.zeros(8)], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# bad input: a clear error naming the argument, never a crash and never a changed model


@pytest.mark.parametrize(
    "kw,error,words",
    [
        (dict(input_size=0), ValueError, "input_size"),
        (dict(hidden_size=-1), ValueError, "hidden_size"),
        (dict(input_size=2.5), TypeError, "input_size"),
        (dict(num_layers=0), ValueError, "num_layers"),
        (dict(proj_size=4), ValueError, "proj_size"),
        (dict(proj_size=-1), ValueError, "proj_size"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(dropout=-0.1), ValueError, "dropout"),
        (dict(proj_clip=1.0), ValueError, "proj_clip"),
        (dict(cell_clip=0.0), ValueError, "cell_clip"),
        (dict(cell_clip=-1.0), ValueError, "cell_clip"),
        (dict(dtype="int32"), TypeError, "dtype"),
        (dict(dtype="float16"), TypeError, "dtype"),
    ],
)
def test_bad_constructor_arguments(kw, error, words):
    args = dict(input_size=3, hidden_size=4)
    args.update(kw)
    with pytest.raises(error, match=words):
        lstmcpp.LSTM(args.pop("input_size"), args.pop("hidden_size"), **args)


@pytest.fixture
def model():
    return lstmcpp.LSTM(3, 4, num_layers=2, seed=0)


@pytest.mark.parametrize(
    "x,error,words",
    [
        (np.zeros((5, 2, 3, 1)), ValueError, r"x: expected a 3-D .* got shape \(5, 2, 3, 1\)"),
        (np.zeros(5), ValueError, r"x: .* got shape \(5,\)"),
        (np.zeros((5, 2, 7)), ValueError, r"x: expected shape \(T, B, 3\), got \(5, 2, 7\)"),
        (np.zeros((0, 2, 3)), ValueError, "T = 0"),
        (np.zeros((5, 0, 3)), ValueError, "B = 0"),
        (np.zeros((5, 2, 3), complex), TypeError, "x: .*complex"),
        (np.array([["a", "b", "c"]]), TypeError, "x: "),
        (np.empty((5, 3), object), TypeError, "x: "),
        ("hello", TypeError, "x: "),
    ],
)
def test_bad_x(model, x, error, words):
    before = model.state_dict()
    with pytest.raises(error, match=words):
        model(x)
    with pytest.raises(error, match=words):
        model.forward(x)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_bad_state(model):
    x = np.zeros((5, 2, 3))
    with pytest.raises(ValueError, match=r"h_0: expected shape \(2, 2, 4\), got \(1, 2, 4\)"):
        model(x, (np.zeros((1, 2, 4)), np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match=r"c_0: expected shape \(2, 2, 4\), got \(2, 3, 4\)"):
        model(x, (np.zeros((2, 2, 4)), np.zeros((2, 3, 4))))
    with pytest.raises(TypeError, match="state"):
        model(x, np.zeros((2, 2, 4)))


@pytest.mark.parametrize(
    "lengths,error,words",
    [
        (np.array([0, 5]), ValueError, r"lengths: every length must be in 1..5"),
        (np.array([6, 5]), ValueError, r"lengths: every length must be in 1..5"),
        (np.array([5]), ValueError, r"lengths: expected shape \(2,\), got \(1,\)"),
        (np.array([2.0, 5.0]), TypeError, "lengths: expected integers"),
    ],
)
def test_bad_lengths(model, lengths, error, words):
    with pytest.raises(error, match=words):
        model(np.zeros((5, 2, 3)), lengths=lengths)


def test_bad_backward_arguments(model):
    x = np.zeros((5, 2, 3))
    y, _, cache = model.forward(x)
    other = lstmcpp.LSTM(3, 4, num_layers=2)
    _, _, other_cache = other.forward(x)
    with pytest.raises(ValueError, match="cache: it was made by another model"):
        model.backward(other_cache, np.ones_like(y))
    with pytest.raises(TypeError, match="cache"):
        model.backward({"not": "a cache"}, np.ones_like(y))
    with pytest.raises(ValueError, match=r"dy: expected shape \(5, 2, 4\) \(the shape of y\), got \(5, 2, 3\)"):
        model.backward(cache, np.ones((5, 2, 3)))
    with pytest.raises(ValueError, match=r"dh_n: expected shape \(2, 2, 4\)"):
        model.backward(cache, np.ones_like(y), (np.ones((2, 4)), None))
    with pytest.raises(TypeError, match="dy"):
        model.backward(cache, np.ones(y.shape, complex))
    assert not any(g.any() for g in model.grads.values())  # nothing was accumulated


def test_bad_state_dict_leaves_the_model_unchanged(model):
    good = model.state_dict()
    bad = {k: np.zeros_like(v) for k, v in good.items()}
    bad["weight_hh_l1"] = np.zeros((16, 5))
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l1'\]: expected shape \(16, 4\), got \(16, 5\)"):
        model.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing keys.*weight_ih_l0"):
        model.load_state_dict({k: v for k, v in good.items() if k != "weight_ih_l0"})
    with pytest.raises(ValueError, match="unexpected keys.*weight_hr_l0"):
        model.load_state_dict({**good, "weight_hr_l0": np.zeros((2, 4))})
    bad = dict(good, weight_ih_l0=np.zeros((16, 3), complex))
    with pytest.raises(TypeError, match="weight_ih_l0"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, good[k])


def test_other_dtypes_and_layouts_are_converted():
    m = lstmcpp.LSTM(3, 4, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((3, 6, 2))
    ref = m(np.ascontiguousarray(x.transpose(1, 2, 0)))[0]
    np.testing.assert_array_equal(m(x.transpose(1, 2, 0))[0], ref)  # non-contiguous
    np.testing.assert_array_equal(m(np.ones((6, 2, 3), np.int64))[0], m(np.ones((6, 2, 3)))[0])
    np.testing.assert_array_equal(m([[1.0, 2.0, 3.0]])[0], m(np.array([[1.0, 2.0, 3.0]]))[0])  # lists


def test_threads_setting():
    n = lstmcpp.get_num_threads()
    try:
        lstmcpp.set_num_threads(1)
        assert lstmcpp.get_num_threads() == 1
        with pytest.raises(ValueError, match="n must be >= 1"):
            lstmcpp.set_num_threads(0)
    finally:
        lstmcpp.set_num_threads(n)


def test_the_gil_is_released_during_compute():
    m = lstmcpp.LSTM(256, 256, num_layers=2)
    x = np.random.default_rng(0).standard_normal((400, 1, 256)).astype(np.float32)
    start = time.perf_counter()
    m(x)
    single = time.perf_counter() - start
    counted = 0
    worker = threading.Thread(target=lambda: [m(x) for _ in range(3)])
    worker.start()
    while worker.is_alive():
        counted += 1
    worker.join()
    # With the GIL held for each whole call, this loop could run only between calls.
    assert counted > 1000, (counted, single)


def test_info_reports_the_kernels_and_threads():
    info = lstmcpp.info()
    assert info["isa"] in info["isa_supported"]
    assert info["threads"] == lstmcpp.get_num_threads()
    assert "OpenBLAS" in info["blas"]
    assert info["version"] == lstmcpp.__version__


def test_check_command_runs():
    out = subprocess.run([sys.executable, "-m", "lstmcpp", "check", "--steps", "20", "--hidden", "32", "--batch", "4"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "matches the NumPy reference" in out.stdout
