"""Parity with torch.nn.LSTM (same state dict, same outputs, same gradients). Skipped without torch."""

import numpy as np
import pytest

import lstmcpp

from conftest import rel_err

torch = pytest.importorskip("torch")

CONFIGS = {
    "plain": dict(),
    "no_bias": dict(bias=False),
    "projection": dict(proj_size=4),
    "two_layers": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "batch_first": dict(batch_first=True),
    "all": dict(num_layers=2, bidirectional=True, proj_size=4, batch_first=True),
}


def pair(config, dtype):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 9, **config).to(getattr(torch, dtype))
    ours = lstmcpp.LSTM(6, 9, dtype=dtype, **config)
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return ref, ours


def inputs(ref, dtype, T=7, B=5, seed=0):
    rng = np.random.default_rng(seed)
    D = 2 if ref.bidirectional else 1
    P = ref.proj_size or ref.hidden_size
    x = rng.standard_normal((B, T, 6) if ref.batch_first else (T, B, 6)).astype(dtype)
    h0 = rng.standard_normal((D * ref.num_layers, B, P)).astype(dtype)
    c0 = rng.standard_normal((D * ref.num_layers, B, ref.hidden_size)).astype(dtype)
    return x, h0, c0


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("name", CONFIGS)
def test_same_outputs_and_gradients_as_torch(name, dtype, tol):
    ref, ours = pair(CONFIGS[name], dtype)
    x, h0, c0 = inputs(ref, dtype)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    yt, (hnt, cnt) = ref(xt, (h0t, c0t))
    rng = np.random.default_rng(1)
    R, Rh, Rc = (rng.standard_normal(t.shape).astype(dtype) for t in (yt, hnt, cnt))
    ((yt * torch.tensor(R)).sum() + (hnt * torch.tensor(Rh)).sum() + (cnt * torch.tensor(Rc)).sum()).backward()

    y, (hn, cn), cache = ours.forward(x, (h0, c0))
    dx, (dh0, dc0) = ours.backward(cache, R, (Rh, Rc))
    assert rel_err(y, yt.detach().numpy()) < tol
    assert rel_err(hn, hnt.detach().numpy()) < tol
    assert rel_err(cn, cnt.detach().numpy()) < tol
    assert rel_err(dx, xt.grad.numpy()) < tol
    assert rel_err(dh0, h0t.grad.numpy()) < tol
    assert rel_err(dc0, c0t.grad.numpy()) < tol
    for name_, p in ref.named_parameters():
        assert rel_err(ours.grads[name_], p.grad.numpy()) < tol, name_


@pytest.mark.parametrize("name", ["plain", "bidirectional", "all"])
def test_lengths_equal_pack_padded_sequence(name):
    dtype = "float64"
    ref, ours = pair(CONFIGS[name], dtype)
    x, h0, c0 = inputs(ref, dtype, T=8, B=5)
    lengths = np.array([3, 8, 1, 5, 7])
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=ref.batch_first, enforce_sorted=False)
    out, (hnt, cnt) = ref(packed, (h0t, c0t))
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=ref.batch_first, total_length=8)
    rng = np.random.default_rng(1)
    R, Rh, Rc = (rng.standard_normal(t.shape) for t in (yt, hnt, cnt))
    ((yt * torch.tensor(R)).sum() + (hnt * torch.tensor(Rh)).sum() + (cnt * torch.tensor(Rc)).sum()).backward()

    y, (hn, cn), cache = ours.forward(x, (h0, c0), lengths=lengths)
    dx, (dh0, dc0) = ours.backward(cache, R, (Rh, Rc))
    for a, b in [(y, yt), (hn, hnt), (cn, cnt), (dx, xt.grad), (dh0, h0t.grad), (dc0, c0t.grad)]:
        assert rel_err(a, b.detach().numpy()) < 1e-10
    for name_, p in ref.named_parameters():
        assert rel_err(ours.grads[name_], p.grad.numpy()) < 1e-10, name_


def test_unbatched_input_matches_torch():
    ref, ours = pair(dict(num_layers=2, bidirectional=True), "float64")
    x = np.random.default_rng(0).standard_normal((4, 6))
    yt, (hnt, cnt) = ref(torch.tensor(x))
    y, (hn, cn) = ours(x)
    assert y.shape == tuple(yt.shape) and hn.shape == tuple(hnt.shape)
    assert rel_err(y, yt.detach().numpy()) < 1e-10 and rel_err(cn, cnt.detach().numpy()) < 1e-10


def test_state_dict_names_and_shapes_are_torchs():
    for config in CONFIGS.values():
        ref, ours = pair(config, "float32")
        theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
        assert list(ours.state_dict()) == list(theirs)
        assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())


def test_torch_tensors_load_directly():
    ref = torch.nn.LSTM(3, 4)
    ours = lstmcpp.LSTM(3, 4)
    ours.load_state_dict(ref.state_dict())  # tensors, not arrays
    np.testing.assert_array_equal(ours.state_dict()["weight_hh_l0"], ref.weight_hh_l0.detach().numpy())
