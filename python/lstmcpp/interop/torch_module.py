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


def is_torch_quantized(module: Any) -> bool:
    """Whether ``module`` is PyTorch's dynamic-quantized LSTM (``torch.ao.nn.quantized.dynamic.LSTM``)."""
    kind = type(module)
    return kind.__name__ == "LSTM" and kind.__module__.startswith("torch.ao.nn.quantized.dynamic")


def read_torch_quantized(module: Any) -> Converted:
    """The arguments and arrays of an lstmcpp ``QuantizedLSTM`` ("int8") with the int8 weights of
    PyTorch's dynamic-quantized LSTM: its integers as they are, each row with its tensor's scale
    (or its channel's), its biases in float32."""
    torch = require("torch")
    if not is_torch_quantized(module):
        raise TypeError(f"module: expected torch.ao.nn.quantized.dynamic.LSTM, got {type(module).__name__}")
    if module.dtype != torch.qint8:
        raise ValueError(f"module: only int8 weights (torch.qint8) can be kept, got {module.dtype}")
    if getattr(module, "proj_size", 0):
        raise ValueError("module: a projection (proj_size) is not supported by PyTorch's dynamic LSTM")
    arguments = dict(input_size=module.input_size, hidden_size=module.hidden_size, num_layers=module.num_layers,
                     bias=module.bias, batch_first=module.batch_first, bidirectional=module.bidirectional, dtype="float32")
    D = 2 if module.bidirectional else 1
    arrays = {}
    for k, weights in enumerate(module._all_weight_values):
        sfx = f"_l{k // D}" + ("_reverse" if k % D else "")
        packed = weights.param.__getstate__()[0][4]  # (packed W_ih, packed W_hh), as torch stores them
        for name, params in zip(("ih", "hh"), packed):
            w, b = torch.ops.quantized.linear_unpack(params)
            if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                zero_points, scales = [w.q_zero_point()], np.full(w.shape[0], w.q_scale(), np.float32)
            else:
                zero_points, scales = w.q_per_channel_zero_points().tolist(), w.q_per_channel_scales().numpy().astype(np.float32)
            if any(zero_points):
                raise ValueError(f"module: weight_{name}{sfx} has a nonzero zero point; only symmetric int8 can be kept")
            arrays[f"weight_{name}{sfx}.q"] = w.int_repr().numpy().astype(np.int8)
            arrays[f"weight_{name}{sfx}.scale"] = scales
            if module.bias:
                arrays[f"bias_{name}{sfx}"] = (b.detach().numpy() if b is not None else np.zeros(w.shape[0])).astype(np.float32)
    return arguments, arrays


def write_torch(model: Any):
    """A ``torch.nn.LSTM`` with ``model``'s configuration and weights (same dtype)."""
    torch = require("torch")
    lacking = [name for name, on in [("peepholes", model.peepholes), ("reverse", getattr(model, "reverse", False)),
                                     ("coupled_input_forget", getattr(model, "coupled_input_forget", False)),
                                     ("layer_norm", getattr(model, "layer_norm", False)),
                                     ("mogrify_rounds", getattr(model, "mogrify_rounds", 0) > 0),
                                     ("cell_clip", model.cell_clip is not None),
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
