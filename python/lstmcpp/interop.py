"""Moving weights in and out: PyTorch, Keras 3 and ONNX.

None of torch, keras, onnx or onnxruntime is needed to import lstmcpp; each function here
imports what it needs and says which package to install when it is missing.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ._lstm import LSTM

__all__ = ["from_torch", "to_torch", "from_keras", "load_onnx", "export_onnx"]

# Gate blocks along 4H: lstmcpp (like PyTorch and Keras) stacks i, f, g, o; ONNX stacks i, o, f, c.
_ONNX_FROM_OURS = [0, 3, 1, 2]  # ONNX block k is our block _ONNX_FROM_OURS[k]
_OURS_FROM_ONNX = [0, 2, 3, 1]  # our block k is ONNX block _OURS_FROM_ONNX[k]


def _require(module: str, package: Optional[str] = None):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this needs {module}: pip install {package or module}") from None


def _blocks(w: np.ndarray, order: List[int], H: int) -> np.ndarray:
    """Reorder the four H-row gate blocks of ``w`` (4H, ...) or (4H,)."""
    return np.concatenate([w[k * H : (k + 1) * H] for k in order])


# ------------------------------------------------------------------------------------------------
# PyTorch


def from_torch(module: Any, *, dtype: Any = None) -> LSTM:
    """An :class:`LSTM` with the configuration and weights of a ``torch.nn.LSTM``."""
    torch = _require("torch")
    if not isinstance(module, torch.nn.LSTM):
        raise TypeError(f"module: expected a torch.nn.LSTM, got {type(module).__name__}")
    weight = module.weight_ih_l0
    if dtype is None:
        dtype = "float64" if weight.dtype == torch.float64 else "float32"
    model = LSTM(
        module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
        batch_first=module.batch_first, dropout=float(module.dropout), bidirectional=module.bidirectional,
        proj_size=module.proj_size, dtype=dtype,
    )
    model.load_state_dict({k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})
    return model


def to_torch(model: LSTM):
    """A ``torch.nn.LSTM`` with ``model``'s configuration and weights (same dtype)."""
    torch = _require("torch")
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


# ------------------------------------------------------------------------------------------------
# Keras 3


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


def from_keras(layer: Any, *, dtype: Any = "float32") -> LSTM:
    """An :class:`LSTM` (``batch_first=True``, as Keras is) from a Keras 3 LSTM layer.

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
    model = LSTM(I, H, bias=bias is not None, batch_first=True, bidirectional=len(cells) == 2, dtype=dtype)
    state = {}
    for d, (kernel, recurrent, bias) in enumerate(cells):
        sfx = "_l0" + ("_reverse" if d else "")
        state["weight_ih" + sfx] = kernel.T  # Keras' gate order i, f, c, o is PyTorch's i, f, g, o
        state["weight_hh" + sfx] = recurrent.T
        if bias is not None:  # one bias in Keras: all of it in bias_ih
            state["bias_ih" + sfx] = bias
            state["bias_hh" + sfx] = np.zeros_like(bias)
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------------------------------
# ONNX


def _attributes(node: Any) -> Dict[str, Any]:
    onnx = _require("onnx")
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def load_onnx(path_or_model: Union[str, "os.PathLike[str]", bytes, Any], *, dtype: Any = "float32") -> LSTM:
    """An :class:`LSTM` from the ``LSTM`` node(s) of an ONNX model.

    One node gives one layer; several nodes (as :func:`export_onnx` writes them) are stacked in
    graph order. Weights (W, R, B, P) must be initializers. ``direction`` forward or
    bidirectional and ``layout`` 0 or 1 are honoured (a reverse-only node is refused, as is a
    node with custom activations, ``input_forget=1`` or ``clip``: ONNX's clip bounds the
    gates' inputs, which lstmcpp does not do). ``sequence_lens`` and the initial state are run-
    time inputs: pass them as ``lengths=`` and ``state=``.
    """
    onnx = _require("onnx")
    from onnx import numpy_helper

    if isinstance(path_or_model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(path_or_model))
    elif isinstance(path_or_model, (str, os.PathLike)):
        try:
            model = onnx.load(os.fspath(path_or_model))
        except Exception as e:  # protobuf's DecodeError and friends
            raise ValueError(f"{os.fspath(path_or_model)}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    elif hasattr(path_or_model, "graph"):
        model = path_or_model
    else:
        raise TypeError(f"path_or_model: expected a path, bytes or an onnx.ModelProto, got {type(path_or_model).__name__}")
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "LSTM"]
    if not nodes:
        raise ValueError("the ONNX model has no LSTM node")

    layers = []
    for k, node in enumerate(nodes):
        where = f"LSTM node {k} ({node.name or 'unnamed'})"
        attrs = _attributes(node)
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        refused = []
        activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if activations and [a.lower() for a in activations] != ["sigmoid", "tanh", "tanh"] * (len(activations) // 3):
            refused.append(f"activations={activations}")
        if attrs.get("input_forget", 0):
            refused.append("input_forget=1")
        if "clip" in attrs:
            refused.append(f"clip={attrs['clip']}")
        if direction == "reverse":
            refused.append("direction='reverse'")
        if refused:
            raise ValueError(f"{where}: lstmcpp cannot honour " + ", ".join(refused))
        inputs = list(node.input) + [""] * (8 - len(node.input))
        for slot, what in [(1, "W"), (2, "R")]:
            if inputs[slot] not in inits:
                raise ValueError(f"{where}: its {what} must be an initializer (a weight stored in the file)")
        W, R = inits[inputs[1]], inits[inputs[2]]
        B = inits.get(inputs[3]) if inputs[3] else None
        P = inits.get(inputs[7]) if inputs[7] else None
        if inputs[3] and B is None or inputs[7] and P is None:
            raise ValueError(f"{where}: its B and P must be initializers when given")
        D, G, I = W.shape
        H = G // 4
        if R.shape != (D, 4 * H, H) or (B is not None and B.shape != (D, 8 * H)) or (P is not None and P.shape != (D, 3 * H)):
            raise ValueError(f"{where}: inconsistent shapes W {W.shape}, R {R.shape}" + (f", B {B.shape}" if B is not None else "") + (f", P {P.shape}" if P is not None else ""))
        if attrs.get("hidden_size", H) != H:
            raise ValueError(f"{where}: hidden_size={attrs['hidden_size']} but W has {H} units")
        layers.append(dict(W=W, R=R, B=B, P=P, D=D, H=H, I=I, layout=attrs.get("layout", 0), where=where))

    first = layers[0]
    D, H = first["D"], first["H"]
    for layer in layers[1:]:
        if layer["D"] != D or layer["H"] != H or layer["I"] != D * H:
            raise ValueError(f"{layer['where']}: cannot be stacked on the previous node (expected {D} direction(s), "
                             f"hidden_size {H}, input size {D * H}; got {layer['D']}, {layer['H']}, {layer['I']})")
    has_bias = any(layer["B"] is not None for layer in layers)
    peepholes = any(layer["P"] is not None for layer in layers)
    lstm = LSTM(first["I"], H, len(layers), bias=has_bias, bidirectional=D == 2, peepholes=peepholes,
                batch_first=first["layout"] == 1, dtype=dtype)
    state = {}
    for k, layer in enumerate(layers):
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            state["weight_ih" + sfx] = _blocks(layer["W"][d], _OURS_FROM_ONNX, H)
            state["weight_hh" + sfx] = _blocks(layer["R"][d], _OURS_FROM_ONNX, H)
            if has_bias:
                B = layer["B"] if layer["B"] is not None else np.zeros((D, 8 * H))
                state["bias_ih" + sfx] = _blocks(B[d, : 4 * H], _OURS_FROM_ONNX, H)
                state["bias_hh" + sfx] = _blocks(B[d, 4 * H :], _OURS_FROM_ONNX, H)
            if peepholes:
                P = layer["P"] if layer["P"] is not None else np.zeros((D, 3 * H))
                p_i, p_o, p_f = P[d].reshape(3, H)  # ONNX's order i, o, f; ours i, f, o
                state["weight_peephole" + sfx] = np.stack([p_i, p_f, p_o])
    lstm.load_state_dict(state)
    return lstm


def export_onnx(model: LSTM, path: Union[str, "os.PathLike[str]", None] = None, *, opset: int = 14):
    """Write ``model`` as an ONNX graph: one ``LSTM`` node per layer (peepholes as P).

    Graph inputs: ``x`` (shaped as lstmcpp takes it, ``batch_first`` honoured), ``lengths``
    (int32, B) and ``h0``, ``c0`` (D*L,B,P/H); outputs ``y``, ``h_n``, ``c_n`` as lstmcpp returns
    them. Projection and cell or projection clipping have no ONNX equivalent and are refused.
    Returns the ``onnx.ModelProto`` (and writes it when ``path`` is given).
    """
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    lacking = [name for name, on in [("proj_size", model.proj_size > 0), ("cell_clip", model.cell_clip is not None),
                                     ("proj_clip", model.proj_clip is not None)] if on]
    if lacking:
        raise ValueError(f"ONNX's LSTM has no equivalent of {', '.join(lacking)}: this model cannot be exported")
    L, D, H, I = model.num_layers, model.num_directions, model.hidden_size, model.input_size
    elem = TensorProto.DOUBLE if model.dtype == np.float64 else TensorProto.FLOAT
    sd = model.state_dict()
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = "x"
    if model.batch_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2]))
        x = "x_time_major"
    hs, cs = [], []
    for layer in range(L):
        W, R, B, P = [], [], [], []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            W.append(_blocks(sd["weight_ih" + sfx], _ONNX_FROM_OURS, H))
            R.append(_blocks(sd["weight_hh" + sfx], _ONNX_FROM_OURS, H))
            if model.bias:
                B.append(np.concatenate([_blocks(sd["bias_ih" + sfx], _ONNX_FROM_OURS, H),
                                         _blocks(sd["bias_hh" + sfx], _ONNX_FROM_OURS, H)]))
            if model.peepholes:
                p_i, p_f, p_o = sd["weight_peephole" + sfx]
                P.append(np.concatenate([p_i, p_o, p_f]))
        start, end = const(f"start_l{layer}", np.array([layer * D], np.int64)), const(f"end_l{layer}", np.array([(layer + 1) * D], np.int64))
        axis = const(f"axis_l{layer}", np.array([0], np.int64))
        nodes.append(helper.make_node("Slice", ["h0", start, end, axis], [f"h0_l{layer}"]))
        nodes.append(helper.make_node("Slice", ["c0", start, end, axis], [f"c0_l{layer}"]))
        inputs = [x, const(f"W_l{layer}", np.stack(W)), const(f"R_l{layer}", np.stack(R)),
                  const(f"B_l{layer}", np.stack(B)) if B else "", "lengths", f"h0_l{layer}", f"c0_l{layer}",
                  const(f"P_l{layer}", np.stack(P)) if P else ""]
        nodes.append(helper.make_node("LSTM", inputs, [f"Y_l{layer}", f"Yh_l{layer}", f"Yc_l{layer}"], name=f"lstm_l{layer}",
                                      hidden_size=H, direction="bidirectional" if D == 2 else "forward"))
        # Y (T,D,B,H) -> (T,B,D*H), the next layer's input
        nodes.append(helper.make_node("Transpose", [f"Y_l{layer}"], [f"Yt_l{layer}"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"Yt_l{layer}", const(f"shape_l{layer}", np.array([0, 0, D * H], np.int64))], [f"out_l{layer}"]))
        x = f"out_l{layer}"
        hs.append(f"Yh_l{layer}")
        cs.append(f"Yc_l{layer}")
    nodes.append(helper.make_node("Concat", hs, ["h_n"], axis=0))
    nodes.append(helper.make_node("Concat", cs, ["c_n"], axis=0))
    nodes.append(helper.make_node("Transpose" if model.batch_first else "Identity", [x], ["y"], **({"perm": [1, 0, 2]} if model.batch_first else {})))
    seq = ["B", "T", I] if model.batch_first else ["T", "B", I]
    graph = helper.make_graph(
        nodes, "lstmcpp",
        [helper.make_tensor_value_info("x", elem, seq),
         helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]),
         helper.make_tensor_value_info("h0", elem, [D * L, "B", H]),
         helper.make_tensor_value_info("c0", elem, [D * L, "B", H])],
        [helper.make_tensor_value_info("y", elem, (["B", "T"] if model.batch_first else ["T", "B"]) + [D * H]),
         helper.make_tensor_value_info("h_n", elem, [D * L, "B", H]),
         helper.make_tensor_value_info("c_n", elem, [D * L, "B", H])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="lstmcpp")
    onnx.checker.check_model(onnx_model)
    if path is not None:
        onnx.save(onnx_model, os.fspath(path))
    return onnx_model
