"""ONNX's ``LSTM`` operator, in and out (``lstmcpp.load_onnx``, ``LSTM.export_onnx``)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from ._common import CIFG_FROM_ONNX, ONNX_FROM_OURS, OURS_FROM_ONNX, Converted, blocks, require, with_forget_block


def _attributes(node: Any) -> Dict[str, Any]:
    onnx = require("onnx")
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _load_model(path_or_model: Union[str, "os.PathLike[str]", bytes, Any]):
    onnx = require("onnx")
    if isinstance(path_or_model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(path_or_model))
    if isinstance(path_or_model, (str, os.PathLike)):
        try:
            return onnx.load(os.fspath(path_or_model))
        except Exception as e:  # protobuf's DecodeError and friends
            raise ValueError(f"{os.fspath(path_or_model)}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if hasattr(path_or_model, "graph"):
        return path_or_model
    raise TypeError(f"path_or_model: expected a path, bytes or an onnx.ModelProto, got {type(path_or_model).__name__}")


QUANTIZED_LSTM = "DynamicQuantizeLSTM"  # ONNX Runtime's int8 LSTM (com.microsoft), as its quantize_dynamic writes it


def onnx_is_quantized(path_or_model: Union[str, "os.PathLike[str]", bytes, Any]) -> bool:
    """Whether the model's LSTM nodes are ONNX Runtime's ``DynamicQuantizeLSTM``."""
    return any(n.op_type == QUANTIZED_LSTM for n in _load_model(path_or_model).graph.node)


def _per_row(scale: np.ndarray, D: int, G: int, where: str, what: str) -> np.ndarray:
    """A DynamicQuantizeLSTM matrix's scales (per direction, or per column of W^T) as (D, G)."""
    scale = np.asarray(scale, np.float32)
    if scale.shape in ((D,), (D, 1)):
        return np.repeat(scale.reshape(D, 1), G, axis=1)
    if scale.shape == (D, G):
        return scale
    raise ValueError(f"{where}: {what} scale has shape {scale.shape}; expected ({D},) or ({D}, {G})")


def as_uint8(q: np.ndarray) -> np.ndarray:
    """Symmetric int8 weights as DynamicQuantizeLSTM's uint8 ones with zero point 128. ONNX Runtime's
    int8-weight kernel for CPUs without VNNI multiplies with vpmaddubsw, whose int16 pair sums
    saturate on full-range weights (measured on a Zen 3: 46% relative error against the float
    model, 0.7% for these); its uint8 kernels widen to 16 bits and are exact on every CPU, so a
    file written on one machine runs right on any other."""
    return (q.astype(np.int16) + 128).astype(np.uint8)


def _symmetric(w: np.ndarray, zero_point: np.ndarray, where: str, what: str) -> np.ndarray:
    """A DynamicQuantizeLSTM matrix's integers as symmetric int8: int8 with zero point 0 as they
    are, uint8 with zero point 128 (as export_onnx writes them) less 128."""
    zero_point = np.asarray(zero_point)
    if w.dtype == np.uint8:
        if zero_point.dtype != np.uint8 or np.any(zero_point != 128):
            raise ValueError(f"{where}: {what} is uint8 with zero points other than 128; only symmetric weights "
                             "can be kept (int8 with zero point 0, or uint8 with zero point 128)")
        return (w.astype(np.int16) - 128).astype(np.int8)
    if w.dtype != np.int8:
        raise ValueError(f"{where}: {what} has dtype {w.dtype}; expected int8 or uint8")
    if np.any(zero_point != 0):
        raise ValueError(f"{where}: {what} has a nonzero zero point; only symmetric int8 weights can be kept")
    return w


def _read_layers(path_or_model, quantized: bool):
    """The LSTM nodes' weights, one dict per layer: W (D,4H,I) and R (D,4H,H) in ONNX's gate order
    (as (int8, scales (D,4H)) pairs when ``quantized``), B (D,8H), P (D,3H) or None."""
    from onnx import numpy_helper

    graph = _load_model(path_or_model).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kind = QUANTIZED_LSTM if quantized else "LSTM"
    nodes = [n for n in graph.node if n.op_type == kind]
    if not nodes:
        raise ValueError(f"the ONNX model has no {kind} node")
    layers = []
    for k, node in enumerate(nodes):
        where = f"{kind} node {k} ({node.name or 'unnamed'})"
        attrs = _attributes(node)
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        refused = []
        activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if activations and [a.lower() for a in activations] != ["sigmoid", "tanh", "tanh"] * (len(activations) // 3):
            refused.append(f"activations={activations}")
        if "clip" in attrs:
            refused.append(f"clip={attrs['clip']}")
        if refused:
            raise ValueError(f"{where}: lstmcpp cannot honour " + ", ".join(refused))
        inputs = list(node.input) + [""] * (12 - len(node.input))
        weight_slots = [(1, "W"), (2, "R")] + ([(8, "W_scale"), (9, "W_zero_point"), (10, "R_scale"), (11, "R_zero_point")]
                                              if quantized else [])
        for slot, what in weight_slots:
            if inputs[slot] not in inits:
                raise ValueError(f"{where}: its {what} must be an initializer (a weight stored in the file)")
        W, R = inits[inputs[1]], inits[inputs[2]]
        if quantized:  # W (D,I,4H), R (D,H,4H): the transposes of the LSTM operator's
            W, R = W.transpose(0, 2, 1), R.transpose(0, 2, 1)
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
        if quantized:
            W = (_symmetric(W, inits[inputs[9]], where, "W"), _per_row(inits[inputs[8]], D, G, where, "W"))
            R = (_symmetric(R, inits[inputs[11]], where, "R"), _per_row(inits[inputs[10]], D, G, where, "R"))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"{where}: unknown direction {direction!r}")
        layers.append(dict(W=W, R=R, B=B, P=P, D=D, H=H, I=I, layout=attrs.get("layout", 0), where=where,
                           reverse=direction == "reverse", cifg=bool(attrs.get("input_forget", 0))))

    first = layers[0]
    D, H = first["D"], first["H"]
    for layer in layers[1:]:
        if layer["reverse"] != first["reverse"]:
            raise ValueError(f"{layer['where']}: its direction differs from the first node's; lstmcpp stacks layers of one direction")
        if layer["cifg"] != first["cifg"]:
            raise ValueError(f"{layer['where']}: its input_forget differs from the first node's; lstmcpp stacks layers of one cell")
        if layer["D"] != D or layer["H"] != H or layer["I"] != D * H:
            raise ValueError(f"{layer['where']}: cannot be stacked on the previous node (expected {D} direction(s), "
                             f"hidden_size {H}, input size {D * H}; got {layer['D']}, {layer['H']}, {layer['I']})")
    return layers


def _converted(layers, dtype: Any, quantized: bool) -> Converted:
    first = layers[0]
    D, H = first["D"], first["H"]
    has_bias = any(layer["B"] is not None for layer in layers)
    peepholes = any(layer["P"] is not None for layer in layers)
    arguments = dict(input_size=first["I"], hidden_size=H, num_layers=len(layers), bias=has_bias, bidirectional=D == 2,
                     peepholes=peepholes, batch_first=first["layout"] == 1, dtype=dtype)
    if first["reverse"]:
        arguments["reverse"] = True
    cifg = first["cifg"]  # input_forget=1: the forget block and its peephole are ignored
    if cifg:
        arguments["coupled_input_forget"] = True
    order = CIFG_FROM_ONNX if cifg else OURS_FROM_ONNX
    state = {}
    for k, layer in enumerate(layers):
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            for name, matrix in (("weight_ih", layer["W"]), ("weight_hh", layer["R"])):
                if quantized:
                    state[name + sfx + ".q"] = blocks(matrix[0][d], order, H)
                    state[name + sfx + ".scale"] = blocks(matrix[1][d], order, H)
                else:
                    state[name + sfx] = blocks(matrix[d], order, H)
            if has_bias:
                B = layer["B"] if layer["B"] is not None else np.zeros((D, 8 * H))
                state["bias_ih" + sfx] = blocks(B[d, : 4 * H], order, H).astype(np.float32 if quantized else B.dtype)
                state["bias_hh" + sfx] = blocks(B[d, 4 * H :], order, H).astype(np.float32 if quantized else B.dtype)
            if peepholes:
                P = layer["P"] if layer["P"] is not None else np.zeros((D, 3 * H))
                p_i, p_o, p_f = P[d].reshape(3, H)  # ONNX's order i, o, f; ours i, f, o (CIFG: i, o)
                rows = [p_i, p_o] if cifg else [p_i, p_f, p_o]
                state["weight_peephole" + sfx] = np.stack(rows).astype(np.float32 if quantized else P.dtype)
    return arguments, state


def read_onnx(path_or_model: Union[str, "os.PathLike[str]", bytes, Any], dtype: Any = "float32") -> Converted:
    """The arguments and state dict of an lstmcpp LSTM equal to the ``LSTM`` node(s) of an ONNX model.

    One node gives one layer; several nodes (as :func:`write_onnx` writes them) are stacked in
    graph order. Weights (W, R, B, P) must be initializers. ``direction`` (forward, reverse: an
    LSTM with ``reverse=True``, or bidirectional) and ``layout`` 0 or 1 are honoured (a node
    with custom activations or ``clip`` is refused: ONNX's clip bounds the gates' inputs, which
    lstmcpp does not do). ``input_forget=1`` gives a CIFG model (``coupled_input_forget``), the
    forget block and its peephole dropped, as ONNX ignores them. ``sequence_lens`` and the initial state are run-
    time inputs: pass them as ``lengths=`` and ``state=``.
    """
    return _converted(_read_layers(path_or_model, quantized=False), dtype, quantized=False)


def read_onnx_quantized(path_or_model: Union[str, "os.PathLike[str]", bytes, Any]) -> Converted:
    """The arguments and arrays of an lstmcpp int8 ``QuantizedLSTM`` with the int8 weights of ONNX
    Runtime's ``DynamicQuantizeLSTM`` node(s) (as its ``quantize_dynamic`` or
    :func:`write_onnx` writes them): their integers as they are, each row with its scale;
    symmetric weights only (int8 with zero point 0, or uint8 with zero point 128)."""
    return _converted(_read_layers(path_or_model, quantized=True), "float32", quantized=True)


class _Graph:
    """Nodes and initializers of a graph being written, with unique names for its constants."""

    def __init__(self):
        self.nodes: List[Any] = []
        self.inits: List[Any] = []

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: List[str], outputs: List[str], **attributes) -> str:
        from onnx import helper
        self.nodes.append(helper.make_node(op, inputs, outputs, **attributes))
        return outputs[0]


def _refuse_unexportable(model: Any) -> None:
    lacking = [name for name, on in [("proj_size", model.proj_size > 0), ("cell_clip", model.cell_clip is not None),
                                     ("proj_clip", model.proj_clip is not None)] if on]
    if lacking:
        raise ValueError(f"ONNX's LSTM has no equivalent of {', '.join(lacking)}: this model cannot be exported")
    if getattr(model, "layer_norm", False):
        raise ValueError("ONNX's LSTM operator has no layer normalisation inside its recurrence (it normalises "
                         "nothing between the products and the gates): a layer_norm model cannot be exported")
    if getattr(model, "mogrify_rounds", 0):
        raise ValueError("ONNX's LSTM operator reads x_t and h_(t-1) as they are; the Mogrifier's rounds change "
                         "both inside the recurrence, so a mogrify_rounds model cannot be exported")


def _lstm_nodes(g: _Graph, model: Any, x: str, *, lengths: str = "", h0: str = "", c0: str = "",
                prefix: str = "") -> Tuple[str, str, str]:
    """The ``LSTM`` nodes of ``model`` reading ``x`` time-major (T,B,I): returns the names of
    y (T,B,D*H), h_n and c_n (D*L,B,H). ``lengths``, ``h0``, ``c0``: graph names or ""."""
    L, D, H = model.num_layers, model.num_directions, model.hidden_size
    quantized = getattr(model, "scheme", None) is not None  # an int8 QuantizedLSTM: DynamicQuantizeLSTM nodes
    sd = model.quantized_params() if quantized else model.state_dict()
    cifg = getattr(model, "coupled_input_forget", False)  # ONNX's input_forget=1: a forget block of zeros, ignored
    four = (lambda w: with_forget_block(w, H)) if cifg else (lambda w: w)
    hs, cs = [], []
    for layer in range(L):
        tag = f"{prefix}l{layer}"
        W, R, B, P, scales = [], [], [], [], {"W": [], "R": []}
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            for key, name, out in (("W", "weight_ih", W), ("R", "weight_hh", R)):
                if quantized:  # int8 (4H,K) -> (K,4H), the operator's transpose; a scale per row
                    rows = sd[name + sfx]
                    out.append(np.ascontiguousarray(as_uint8(blocks(four(rows.q), ONNX_FROM_OURS, H)).T))
                    scales[key].append(blocks(four(rows.scale), ONNX_FROM_OURS, H))
                else:
                    out.append(blocks(four(sd[name + sfx]), ONNX_FROM_OURS, H))
            if model.bias:
                B.append(np.concatenate([blocks(four(sd["bias_ih" + sfx]), ONNX_FROM_OURS, H),
                                         blocks(four(sd["bias_hh" + sfx]), ONNX_FROM_OURS, H)]))
            if model.peepholes:
                rows = sd["weight_peephole" + sfx]  # (3,H) i, f, o; CIFG (2,H) i, o
                p_i, p_f, p_o = (rows[0], np.zeros_like(rows[0]), rows[1]) if cifg else rows
                P.append(np.concatenate([p_i, p_o, p_f]))
        if not h0:  # zeros, as the operator takes an absent initial state
            h0_l, c0_l = "", ""
        elif L == 1:  # the whole state is this layer's
            h0_l, c0_l = h0, c0
        else:
            start, end = g.const(f"start_{tag}", np.array([layer * D], np.int64)), g.const(f"end_{tag}", np.array([(layer + 1) * D], np.int64))
            axis = g.const(f"axis_{tag}", np.array([0], np.int64))
            h0_l = g.node("Slice", [h0, start, end, axis], [f"h0_{tag}"])
            c0_l = g.node("Slice", [c0, start, end, axis], [f"c0_{tag}"])
        Y_h, Y_c = f"Yh_{tag}", f"Yc_{tag}"
        inputs = [x, g.const(f"W_{tag}", np.stack(W)), g.const(f"R_{tag}", np.stack(R)),
                  g.const(f"B_{tag}", np.stack(B)) if B else "", lengths, h0_l, c0_l,
                  g.const(f"P_{tag}", np.stack(P)) if P else ""]
        direction = "bidirectional" if D == 2 else "reverse" if getattr(model, "reverse", False) else "forward"
        if quantized:
            middle = np.full((D, 4 * H), 128, np.uint8)  # q + 128 with zero point 128: q, symmetric
            inputs += [g.const(f"W_scale_{tag}", np.stack(scales["W"]).astype(np.float32)), g.const(f"W_zero_point_{tag}", middle),
                       g.const(f"R_scale_{tag}", np.stack(scales["R"]).astype(np.float32)), g.const(f"R_zero_point_{tag}", middle)]
            g.node(QUANTIZED_LSTM, inputs, [f"Y_{tag}", Y_h, Y_c], name=f"lstm_{tag}", domain="com.microsoft",
                   hidden_size=H, direction=direction, input_forget=int(cifg))
        else:
            g.node("LSTM", inputs, [f"Y_{tag}", Y_h, Y_c], name=f"lstm_{tag}", hidden_size=H, direction=direction,
                   input_forget=int(cifg))
        # Y (T,D,B,H) -> (T,B,D*H), the next layer's input
        if D == 1:
            x = g.node("Squeeze", [f"Y_{tag}", g.const(f"axes_{tag}", np.array([1], np.int64))], [f"out_{tag}"])
        else:
            g.node("Transpose", [f"Y_{tag}"], [f"Yt_{tag}"], perm=[0, 2, 1, 3])
            x = g.node("Reshape", [f"Yt_{tag}", g.const(f"shape_{tag}", np.array([0, 0, D * H], np.int64))], [f"out_{tag}"])
        hs.append(Y_h)
        cs.append(Y_c)
    if L == 1:
        return x, hs[0], cs[0]
    return x, g.node("Concat", hs, [f"{prefix}h_n_layers"], axis=0), g.node("Concat", cs, [f"{prefix}c_n_layers"], axis=0)


def _finish(g: _Graph, inputs: List[Any], outputs: List[Any], opset: int, path: Any):
    onnx = require("onnx")
    from onnx import helper
    graph = helper.make_graph(g.nodes, "lstmcpp", inputs, outputs, initializer=g.inits)
    opsets = [helper.make_opsetid("", opset)]
    if any(n.domain == "com.microsoft" for n in g.nodes):  # ONNX Runtime's contrib operators
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="lstmcpp")
    onnx.checker.check_model(onnx_model)
    if path is not None:
        onnx.save(onnx_model, os.fspath(path))
    return onnx_model


def _check_opset(opset: int) -> None:
    if opset < 13:
        raise ValueError(f"opset must be >= 13 (Squeeze takes its axes as an input from 13 on), got {opset}")


def write_onnx(model: Any, path: Union[str, "os.PathLike[str]", None] = None, *, opset: int = 14,
               lengths: bool = False, state: bool = False):
    """Write ``model`` as an ONNX graph: one ``LSTM`` node per layer (peepholes as P); an int8
    :class:`lstmcpp.QuantizedLSTM` as ONNX Runtime's ``com.microsoft.DynamicQuantizeLSTM`` nodes,
    its integers and per-row scales kept (stored as uint8 q + 128 with zero point 128, which ONNX
    Runtime multiplies exactly on every CPU; see :func:`as_uint8`). ONNX Runtime quantizes the
    activations its own way, per tensor with a zero point, so its outputs differ from lstmcpp's
    by that rounding.

    Graph inputs: ``x`` (shaped as lstmcpp takes it, ``batch_first`` honoured; T and B dynamic),
    and with ``lengths=True`` ``lengths`` (int32, B), with ``state=True`` ``h0``, ``c0``
    (D*L,B,P/H); outputs ``y``, ``h_n``, ``c_n`` as lstmcpp returns them. Projection and cell or
    projection clipping have no ONNX equivalent and are refused. Needs ``opset >= 13``.
    Returns the ``onnx.ModelProto`` (and writes it when ``path`` is given).
    """
    require("onnx")
    from onnx import TensorProto, helper

    _refuse_unexportable(model)
    _check_opset(opset)
    scheme = getattr(model, "scheme", None)
    if scheme not in (None, "int8"):
        raise ValueError(f"a {scheme} model has no ONNX operator (ONNX Runtime's DynamicQuantizeLSTM holds int8 "
                         "weights): export q.dequantize() for a float graph")
    L, D, H, I = model.num_layers, model.num_directions, model.hidden_size, model.input_size
    elem = TensorProto.DOUBLE if model.dtype == np.float64 else TensorProto.FLOAT
    g = _Graph()
    x = g.node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2]) if model.batch_first else "x"
    y, h_n, c_n = _lstm_nodes(g, model, x, lengths="lengths" if lengths else "",
                              h0="h0" if state else "", c0="c0" if state else "")
    g.node("Transpose", [y], ["y"], perm=[1, 0, 2]) if model.batch_first else g.node("Identity", [y], ["y"])
    g.node("Identity", [h_n], ["h_n"])
    g.node("Identity", [c_n], ["c_n"])
    seq = ["B", "T", I] if model.batch_first else ["T", "B", I]
    return _finish(
        g,
        [helper.make_tensor_value_info("x", elem, seq)]
        + ([helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"])] if lengths else [])
        + ([helper.make_tensor_value_info("h0", elem, [D * L, "B", H]),
            helper.make_tensor_value_info("c0", elem, [D * L, "B", H])] if state else []),
        [helper.make_tensor_value_info("y", elem, (["B", "T"] if model.batch_first else ["T", "B"]) + [D * H]),
         helper.make_tensor_value_info("h_n", elem, [D * L, "B", H]),
         helper.make_tensor_value_info("c_n", elem, [D * L, "B", H])],
        opset, path)


def _linear(g: _Graph, layer: Any, x: str, name: str) -> str:
    """x (..., in) W^T + b for an lstmcpp ``Linear``, or for an int8 ``QuantizedLinear`` ONNX
    Runtime's ``com.microsoft.DynamicQuantizeMatMul``: its integers as uint8 q + 128 with zero
    point 128 (exact on every CPU, as for the LSTM: :func:`as_uint8`) and a scale per output
    column, the bias inside the node. ONNX Runtime rounds the activations its own way, per tensor
    with a zero point, where lstmcpp rounds each row symmetrically."""
    if getattr(layer, "scheme", None) == "int8":
        q, scale = layer._arrays["weight.q"], layer._arrays["weight.scale"]  # (O, I) int8, (O)
        inputs = [x, g.const(f"{name}_weight_t", np.ascontiguousarray(as_uint8(q).T)),
                  g.const(f"{name}_scale", scale.astype(np.float32)),
                  g.const(f"{name}_zero_point", np.full(q.shape[0], 128, np.uint8))]
        if "bias" in layer._arrays:
            inputs.append(g.const(f"{name}_bias", layer._arrays["bias"]))
        return g.node("DynamicQuantizeMatMul", inputs, [f"{name}_out"], domain="com.microsoft")
    out = g.node("MatMul", [x, g.const(f"{name}_weight_t", np.ascontiguousarray(layer.params["weight"].T))], [f"{name}_matmul"])
    if "bias" in layer.params:
        out = g.node("Add", [out, g.const(f"{name}_bias", layer.params["bias"])], [f"{name}_out"])
    return out


def _fitted_forecaster(g: _Graph, model: Any, lstm: Any, info: Any, elem: Any, dtype: Any, opset: int, path: Any):
    """A Forecaster trained by ``fit``: ``history`` (B, L, F), the last L raw values (L its
    history length) -> ``forecast`` (B, horizon, F) and, with quantiles, ``quantiles`` (B, Q,
    horizon, F): the window in its own units, the network, and the baseline it chose, in the graph."""
    L, W, H, F, S = model._history_length(), model.window, model.horizon, model.n_features, model.season
    Q = len(model.quantiles)
    ints = lambda name, values: g.const(name, np.asarray(values, np.int64))  # noqa: E731

    def cut(x, begin, end, name):  # x[:, begin:end]
        return g.node("Slice", [x, ints(f"{name}_begin", [begin]), ints(f"{name}_end", [end]), ints(f"{name}_axis", [1])],
                      [name])

    def mean_over_time(x, name):
        return g.node("ReduceMean", [x], [name], axes=[1], keepdims=1)

    def steps(x, indices, name):  # x[:, indices]
        return g.node("Gather", [x, ints(f"{name}_at", indices)], [name], axis=1)

    w = cut("history", L - W, L, "window")
    last = cut("history", L - 1, L, "last")
    change = g.node("Abs", [g.node("Sub", [cut(w, 1, W, "later"), cut(w, 0, W - 1, "earlier")], ["changes"])], ["abs_changes"])
    size = g.node("Add", [mean_over_time(g.node("Abs", [w], ["abs_window"]), "window_size"), g.const("one", np.array(1, dtype))],
                  ["size_plus_one"])
    scale = g.node("Add", [mean_over_time(change, "mean_change"),
                           g.node("Mul", [size, g.const("tiny", np.array(1e-8, dtype))], ["floor"])], ["scale"])
    x = g.node("Div", [g.node("Sub", [w, last], ["from_last"]), scale], ["window_units"])
    y, _, _ = _lstm_nodes(g, lstm, g.node("Transpose", [x], ["window_time_major"], perm=[1, 0, 2]))
    out = _linear(g, model.head, g.node("Gather", [y, g.const("last_step", np.array(-1, np.int64))], ["last_output"], axis=0),
                  "head")
    out = g.node("Reshape", [out, ints("outputs_shape", [0, 1 + Q, H, F])], ["outputs_units"])
    kind = model.BASELINES[model.baseline]
    kind = kind if S or kind == "linear" else "last"
    ahead = np.arange(H) % max(S, 1)
    if kind == "linear":  # the direct autoregression on the last p values, standardised
        p, coef = model.linear_order, np.asarray(model.linear_coef, dtype)
        center, spread = g.const("linear_center", np.asarray(model.linear_center, dtype)), \
            g.const("linear_scale", np.asarray(model.linear_scale, dtype))
        z = g.node("Div", [g.node("Sub", [cut("history", L - p, L, "linear_input"), center], ["linear_centred"]), spread],
                   ["linear_standardised"])
        flat = g.node("Reshape", [z, ints("linear_flat_shape", [0, p * F])], ["linear_flat"])
        product = g.node("Add", [g.node("MatMul", [flat, g.const("linear_weight", coef[:-1])], ["linear_product"]),
                                 g.const("linear_intercept", coef[-1])], ["linear_standard_out"])
        shaped = g.node("Reshape", [product, ints("linear_out_shape", [0, H, F])], ["linear_shaped"])
        base = g.node("Add", [g.node("Mul", [shaped, spread], ["linear_rescaled"]), center], ["baseline"])
    elif kind == "last":
        base = steps("history", [L - 1] * H, "baseline")
    elif kind == "seasonal":
        base = steps("history", L - S + ahead, "baseline")
    elif kind == "seasonal_change":
        moved = g.node("Sub", [last, steps("history", [L - 1 - S], "last_season_ago")], ["seasonal_change"])
        base = g.node("Add", [steps("history", L - S + ahead, "same_season_ago"), moved], ["baseline"])
    else:  # the last m seasons' average, at the last season's level
        m = model.seasons_averaged
        seasons = g.node("Reshape", [cut("history", L - m * S, L, "seasons"), ints("seasons_shape", [0, m, S, F])],
                         ["seasons_split"])
        profile = g.node("ReduceMean", [seasons], ["profile"], axes=[1], keepdims=0)  # (B, S, F)
        level = g.node("Sub", [mean_over_time(cut("history", L - S, L, "last_season"), "last_season_mean"),
                               mean_over_time(profile, "profile_mean")], ["level"])
        base = g.node("Add", [steps(profile, ahead, "profile_ahead"), level], ["baseline"])
    axis1 = ints("axis1", [1])
    values = g.node("Add", [g.node("Unsqueeze", [base, axis1], ["baseline_4d"]),
                            g.node("Mul", [out, g.node("Unsqueeze", [scale, axis1], ["scale_4d"])], ["outputs_scaled"])],
                    ["values"])
    g.node("Gather", [values, g.const("point", np.array(0, np.int64))], ["forecast"], axis=1)
    outputs = [info("forecast", elem, ["B", H, F])]
    if Q:
        cut(values, 1, 1 + Q, "quantiles")
        outputs.append(info("quantiles", elem, ["B", Q, H, F]))
    return _finish(g, [info("history", elem, ["B", L, F])], outputs, opset, path)


def write_model_onnx(model: Any, path: Union[str, "os.PathLike[str]", None] = None, *, opset: int = 14):
    """Write a whole model of :mod:`lstmcpp.models` as one ONNX graph, which ONNX Runtime runs
    with outputs equal to the model's own (inference: no dropout; a model quantized to int8 goes
    out as ONNX Runtime's ``DynamicQuantizeLSTM`` and ``DynamicQuantizeMatMul``, its integers and
    scales kept, and ONNX Runtime's outputs differ from lstmcpp's by how each rounds the
    activations):

    - ``CharLM``: ``ids`` (B,T) int64, ``h0``, ``c0`` (L,B,H) -> ``logits`` (B,T,V), ``h_n``, ``c_n``
      (the state carries generation on from call to call: pass zeros to start);
    - ``Forecaster``: ``x`` (B, window, F), raw values -> ``forecast`` (B, horizon, F), raw values;
      trained by ``Forecaster.fit``: ``history`` (B, L, F), its last L raw values (L: the window, or
      the seasons its baseline reads) -> ``forecast`` and, with quantiles, ``quantiles`` (B, Q, horizon, F)
      (the model's scaling inside the graph);
    - ``AttentionClassifier``: ``ids`` (B,T) int64, ``lengths`` (B) int32 -> ``probabilities``
      (B, classes) and ``attention`` (B,T) (zero past each length).
    """
    require("onnx")
    from onnx import TensorProto, helper

    from .. import models
    _check_opset(opset)
    lstm = model.lstm
    for name, child in getattr(model, "children", {}).items():
        scheme = getattr(child, "scheme", None)
        if scheme not in (None, "int8"):
            raise ValueError(f"model: its {name} is in {scheme}, which has no ONNX operator (ONNX Runtime's "
                             "DynamicQuantizeLSTM and DynamicQuantizeMatMul hold int8 weights): export the float "
                             "model, or quantize to int8")
    _refuse_unexportable(lstm)
    elem = TensorProto.DOUBLE if lstm.dtype == np.float64 else TensorProto.FLOAT
    dtype = lstm.dtype
    L, H = lstm.num_layers, lstm.hidden_size
    g = _Graph()
    info = helper.make_tensor_value_info

    if isinstance(model, models.CharLM):
        ids_tm = g.node("Transpose", ["ids"], ["ids_time_major"], perm=[1, 0])
        x = g.node("Gather", [g.const("embedding", model.embedding.params["weight"]), ids_tm], ["embedded"])
        y, h_n, c_n = _lstm_nodes(g, lstm, x, h0="h0", c0="c0")
        logits_tm = _linear(g, model.head, y, "head")
        g.node("Transpose", [logits_tm], ["logits"], perm=[1, 0, 2])
        g.node("Identity", [h_n], ["h_n"])
        g.node("Identity", [c_n], ["c_n"])
        V = len(model.vocab)
        return _finish(g, [info("ids", TensorProto.INT64, ["B", "T"]), info("h0", elem, [L, "B", H]), info("c0", elem, [L, "B", H])],
                       [info("logits", elem, ["B", "T", V]), info("h_n", elem, [L, "B", H]), info("c_n", elem, [L, "B", H])],
                       opset, path)

    if isinstance(model, models.Forecaster) and model.calendar:
        raise ValueError(f"model: a Forecaster with calendar features ({list(model.calendar)}) cannot be exported "
                         "yet: the graph would need the times as an input")
    if isinstance(model, models.Forecaster) and model.baseline >= 0:
        return _fitted_forecaster(g, model, lstm, info, elem, dtype, opset, path)

    if isinstance(model, models.Forecaster):
        F, horizon = model.n_features, model.horizon
        mean, std = np.asarray(model.mean, dtype), np.asarray(model.std, dtype)
        scaled = g.node("Div", [g.node("Sub", ["x", g.const("mean", mean)], ["centred"]), g.const("std", std)], ["scaled"])
        x = g.node("Transpose", [scaled], ["scaled_time_major"], perm=[1, 0, 2])
        y, _, _ = _lstm_nodes(g, lstm, x)
        last = g.node("Gather", [y, g.const("last_step", np.array(-1, np.int64))], ["last"], axis=0)  # (B, H)
        pred = _linear(g, model.head, last, "head")
        pred = g.node("Reshape", [pred, g.const("forecast_shape", np.array([0, horizon, F], np.int64))], ["pred_scaled"])
        g.node("Add", [g.node("Mul", [pred, g.const("std_out", std)], ["pred_unscaled"]), g.const("mean_out", mean)], ["forecast"])
        return _finish(g, [info("x", elem, ["B", model.window, F])], [info("forecast", elem, ["B", horizon, F])], opset, path)

    if isinstance(model, models.AttentionClassifier):
        pool, C = model.attention, model.head.params["weight"].shape[0]
        ids_tm = g.node("Transpose", ["ids"], ["ids_time_major"], perm=[1, 0])
        x = g.node("Gather", [g.const("embedding", model.embedding.params["weight"]), ids_tm], ["embedded"])
        y, _, _ = _lstm_nodes(g, lstm, x, lengths="lengths")   # (T,B,DH), zero past each length
        h = g.node("Transpose", [y], ["h"], perm=[1, 0, 2])     # (B,T,DH)
        u = g.node("Tanh", [_linear(g, pool, h, "attention")], ["u"])  # (B,T,A)
        e = g.node("MatMul", [u, g.const("attention_v", pool.params["v"])], ["e"])  # (B,T)
        # steps past each length take no attention: e = -inf there
        T = g.node("Gather", [g.node("Shape", ["ids"], ["ids_shape"]), g.const("time_axis", np.array(1, np.int64))], ["T"])
        steps = g.node("Range", [g.const("zero", np.array(0, np.int64)), T, g.const("one", np.array(1, np.int64))], ["steps"])
        lengths64 = g.node("Cast", ["lengths"], ["lengths64"], to=TensorProto.INT64)
        inside = g.node("Less", [g.node("Unsqueeze", [steps, g.const("axis0", np.array([0], np.int64))], ["steps_row"]),
                                 g.node("Unsqueeze", [lengths64, g.const("axis1", np.array([1], np.int64))], ["lengths_col"])], ["inside"])
        e = g.node("Where", [inside, e, g.const("minus_inf", np.array(-np.inf, dtype))], ["e_masked"])
        a = g.node("Softmax", [e], ["attention"], axis=1)
        context = g.node("MatMul", [g.node("Unsqueeze", [a, g.const("axis1b", np.array([1], np.int64))], ["a_row"]), h], ["context_3d"])
        context = g.node("Squeeze", [context, g.const("axis1c", np.array([1], np.int64))], ["context"])
        logits = _linear(g, model.head, context, "head")
        g.node("Softmax", [logits], ["probabilities"], axis=1)
        return _finish(g, [info("ids", TensorProto.INT64, ["B", "T"]), info("lengths", TensorProto.INT32, ["B"])],
                       [info("probabilities", elem, ["B", C]), info("attention", elem, ["B", "T"])], opset, path)

    raise TypeError(f"model: expected an LSTM, CharLM, Forecaster or AttentionClassifier, got {type(model).__name__}")
