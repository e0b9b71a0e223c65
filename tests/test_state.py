"""Shapes, parameters and state: PyTorch's state-dict names and shapes, live views, seeds,
initial states, conversion of other dtypes and layouts."""

import numpy as np
import pytest

import lstmcpp

from conftest import TORCH_GRID, torch_pair


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


@pytest.fixture
def model():
    return lstmcpp.LSTM(3, 4, num_layers=2, seed=0)


def test_bad_state(model):
    x = np.zeros((5, 2, 3))
    with pytest.raises(ValueError, match=r"h_0: expected shape \(2, 2, 4\), got \(1, 2, 4\)"):
        model(x, (np.zeros((1, 2, 4)), np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match=r"c_0: expected shape \(2, 2, 4\), got \(2, 3, 4\)"):
        model(x, (np.zeros((2, 2, 4)), np.zeros((2, 3, 4))))
    with pytest.raises(TypeError, match="state"):
        model(x, np.zeros((2, 2, 4)))


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


def test_state_dict_names_and_shapes_are_torchs():
    pytest.importorskip("torch")
    for config in TORCH_GRID.values():
        ref, ours = torch_pair(config, "float32")
        theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
        assert list(ours.state_dict()) == list(theirs)
        assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())


def test_torch_tensors_load_directly():
    torch = pytest.importorskip("torch")
    ref = torch.nn.LSTM(3, 4)
    ours = lstmcpp.LSTM(3, 4)
    ours.load_state_dict(ref.state_dict())  # tensors, not arrays
    np.testing.assert_array_equal(ours.state_dict()["weight_hh_l0"], ref.weight_hh_l0.detach().numpy())
