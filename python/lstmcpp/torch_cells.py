"""The cell variants written with PyTorch operations (autograd does their backward): what a
PyTorch user writes today for a layer-normalised LSTM (pytorch#6760), used as the benchmark
peer and as a parity check. Needs torch (``pip install torch``)."""

from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np

from .interop._common import require


def layer_norm_lstm(model: Any) -> Callable[[Any], Any]:
    """A function ``x (T,B,I) tensor -> y (T,B,H) tensor`` computing ``model`` (a one-layer,
    one-direction ``LSTM(..., layer_norm=True)``, no projection or peepholes) with PyTorch ops on
    copies of its parameters (``.params``, leaves that require grad). The input projection of every
    step is one product, its normalisation one ``layer_norm``; then a step at a time."""
    torch = require("torch")
    F = torch.nn.functional
    if not model.layer_norm or model.num_layers != 1 or model.bidirectional or model.proj_size or model.peepholes:
        raise ValueError("model: expected a one-layer, one-direction layer_norm LSTM without projection or peepholes")
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    p: Dict[str, Any] = {k[: -len("_l0")]: torch.tensor(v, dtype=dtype, requires_grad=True)
                         for k, v in model.state_dict().items()}
    H = model.hidden_size
    gates = 3 if model.coupled_input_forget else 4
    G = gates * H
    zero = torch.zeros(G, dtype=dtype)
    bias = (p["bias_ih"] + p["bias_hh"]) if model.bias else zero

    def run(x):
        T, B, _ = x.shape
        a = F.layer_norm(x @ p["weight_ih"].T, (G,), weight=p["ln_weight_ih"], eps=1e-5)
        h = torch.zeros(B, H, dtype=dtype)
        c = torch.zeros(B, H, dtype=dtype)
        ys = []
        for t in range(T):
            z = a[t] + F.layer_norm(h @ p["weight_hh"].T, (G,), weight=p["ln_weight_hh"], eps=1e-5) + bias
            if gates == 4:
                i, f, g, o = z.chunk(4, 1)
                i, f = torch.sigmoid(i), torch.sigmoid(f)
            else:
                i, g, o = z.chunk(3, 1)
                i = torch.sigmoid(i)
                f = 1 - i
            c = f * c + i * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), weight=p["ln_weight_c"], bias=p["ln_bias_c"], eps=1e-5))
            ys.append(h)
        return torch.stack(ys)

    run.params = p
    return run
