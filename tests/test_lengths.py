"""Variable-length batches (lengths=): padding, final states, and parity with
PyTorch's pack_padded_sequence; bad lengths."""

import numpy as np
import pytest

import lstmcpp

from conftest import rel_err, TORCH_GRID, torch_pair, torch_inputs


def test_padding_outputs_are_zero_and_state_is_last_real_step():
    model = lstmcpp.LSTM(3, 4, bidirectional=True, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    y, (h, c) = model(x, lengths=np.array([6, 3]))
    assert not y[3:, 1].any()
    y_short, (h_short, c_short) = model(x[:3, 1:2])
    np.testing.assert_allclose(y[:3, 1], y_short[:, 0], rtol=1e-12)
    np.testing.assert_allclose(h[:, 1], h_short[:, 0], rtol=1e-12)
    np.testing.assert_allclose(c[:, 1], c_short[:, 0], rtol=1e-12)


@pytest.mark.parametrize("name", ["plain", "bidirectional", "stacked"])
def test_lengths_equal_pack_padded_sequence(name):
    torch = pytest.importorskip("torch")
    dtype = "float64"
    ref, ours = torch_pair(TORCH_GRID[name], dtype)
    x, h0, c0 = torch_inputs(ref, dtype, T=8, B=5)
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


@pytest.fixture
def model():
    return lstmcpp.LSTM(3, 4, num_layers=2, seed=0)


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
