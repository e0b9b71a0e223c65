"""Keras 3's ``LSTM`` and ``Bidirectional(LSTM)`` layers, in (``LSTM.from_keras``)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ._common import Converted


def _keras_lstm_weights(layer: Any) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """kernel (I,4H), recurrent_kernel (H,4H) and bias (4H) of a keras LSTM layer, checked."""
    name = type(layer).__name__
    if name != "LSTM":
        raise TypeError(f"layer: expected keras.layers.LSTM or Bidirectional(LSTM), got {name}")
    activation = getattr(layer.activation, "__name__", str(layer.activation))
    recurrent = getattr(layer.recurrent_activation, "__name__", str(layer.recurrent_activation))
    refused = []
    if activation != "tanh":
        refused.append(f"activation={activation!r} (only 'tanh')")
    if recurrent != "sigmoid":
        refused.append(f"recurrent_activation={recurrent!r} (only 'sigmoid')")
    if getattr(layer, "stateful", False):
        refused.append("stateful=True (carry the state yourself: lstm(x, state))")
    if refused:
        raise ValueError("layer: lstmcpp cannot honour " + ", ".join(refused))
    weights = [np.asarray(w) for w in layer.get_weights()]
    if not weights:
        raise ValueError("layer: it has no weights yet; build it (call it once) before converting")
    return weights[0], weights[1], (weights[2] if layer.use_bias else None)


def read_keras(layer: Any, dtype: Any = "float32") -> Converted:
    """The arguments and state dict of an lstmcpp LSTM (``batch_first=True``, as Keras is) equal
    to a Keras 3 LSTM layer.

    Takes ``keras.layers.LSTM`` or ``keras.layers.Bidirectional(LSTM(...), merge_mode="concat")``.
    lstmcpp always returns the whole sequence and the final state: a Keras layer's output is
    ``y`` with ``return_sequences=True`` and ``y[:, -1]`` (equal to ``h_n[-1]`` in one direction)
    without. A lone layer with ``go_backwards=True`` is refused (run it on ``x[:, ::-1]``).
    """
    name = type(layer).__name__
    if name == "Bidirectional":
        if layer.merge_mode != "concat":
            raise ValueError(f"layer: lstmcpp concatenates the two directions; merge_mode={layer.merge_mode!r} cannot be honoured")
        forward, backward = layer.forward_layer, layer.backward_layer
        if forward.go_backwards or not backward.go_backwards:
            raise ValueError("layer: expected the Bidirectional wrapper's usual forward and backward layers")
        cells = [_keras_lstm_weights(forward), _keras_lstm_weights(backward)]
    else:
        cells = [_keras_lstm_weights(layer)]
        if layer.go_backwards:
            raise ValueError("layer: go_backwards=True cannot be honoured by a one-direction LSTM; "
                             "run lstmcpp on x[:, ::-1] instead, or use keras.layers.Bidirectional")
    kernel, recurrent, bias = cells[0]
    I, H = kernel.shape[0], recurrent.shape[0]
    arguments = dict(input_size=I, hidden_size=H, bias=bias is not None, batch_first=True,
                     bidirectional=len(cells) == 2, dtype=dtype)
    state = {}
    for d, (kernel, recurrent, bias) in enumerate(cells):
        sfx = "_l0" + ("_reverse" if d else "")
        state["weight_ih" + sfx] = kernel.T  # Keras' gate order i, f, c, o is PyTorch's i, f, g, o
        state["weight_hh" + sfx] = recurrent.T
        if bias is not None:  # one bias in Keras: all of it in bias_ih
            state["bias_ih" + sfx] = bias
            state["bias_hh" + sfx] = np.zeros_like(bias)
    return arguments, state
