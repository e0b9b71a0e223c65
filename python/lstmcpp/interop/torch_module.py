"""PyTorch's ``torch.nn.LSTM``, in and out (``LSTM.from_torch``, ``LSTM.to_torch``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Converted, require


def read_torch(module: Any, dtype: Any = None) -> Converted:
    """The arguments and state dict of an lstmcpp LSTM equal to a ``torch.nn.LSTM``."""
    torch = require("torch")
    if not isinstance(module, torch.nn.LSTM):
        raise TypeError(f"module: expected a torch.nn.LSTM, got {type(module).__name__}")
    weight = module.weight_ih_l0
    if dtype is None:
        dtype = "float64" if weight.dtype == torch.float64 else "float32"
    arguments = dict(
        input_size=module.input_size, hidden_size=module.hidden_size, num_layers=module.num_layers, bias=module.bias,
        batch_first=module.batch_first, dropout=float(module.dropout), bidirectional=module.bidirectional,
        proj_size=module.proj_size, dtype=dtype,
    )
    return arguments, {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def write_torch(model: Any):
    """A ``torch.nn.LSTM`` with ``model``'s configuration and weights (same dtype)."""
    torch = require("torch")
    lacking = [name for name, on in [("peepholes", model.peepholes), ("cell_clip", model.cell_clip is not None),
                                     ("proj_clip", model.proj_clip is not None)] if on]
    if lacking:
        raise ValueError(f"torch.nn.LSTM has no {', '.join(lacking)}: this model cannot be converted")
    module = torch.nn.LSTM(
        model.input_size, model.hidden_size, model.num_layers, bias=model.bias, batch_first=model.batch_first,
        dropout=model.dropout, bidirectional=model.bidirectional, proj_size=model.proj_size,
        dtype=torch.float64 if model.dtype == np.float64 else torch.float32,
    )
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return module
