"""Quantized inference (SPEC §5): ``q = lstmcpp.quantize(model, "int8")``.

A :class:`QuantizedLSTM` keeps its matrices (``W_ih``, ``W_hh``, ``W_hr``) in a smaller weight
format and runs exactly as :class:`lstmcpp.LSTM` does for inference: same call, same shapes, same
features, every cell variant. Biases, peepholes, layer norm's gains and the Mogrifier's matrices
stay float32, and so does all of the gate math and the cell state.

``"int8"``: every row of every matrix has its own symmetric scale (``W[n] ~ q[n] * s[n]``, ``q``
in [-127, 127] as :func:`quantize` rounds them; any int8 value, as PyTorch's quantized LSTM
stores them); the activations entering a product are quantized the same way for each batch row
at each step, the products summed exactly in int32, and scaled back. ``q(x)`` equals
``q.dequantize()(x)`` up to that rounding of the activations.

``"bf16"``: every weight rounded to bfloat16 (nearest, ties to even), all arithmetic float32:
``q(x)`` equals ``q.dequantize()(x)`` up to float32 summation order.

``"codebook4"`` / ``"codebook8"``: every weight stored as the index of its value in a codebook
fitted by k-means (k-means++ start, seeded): 16 values for each row, 4-bit indices; or 256
values for each gate block of a matrix (and for all of ``W_hr``), 8-bit indices. All arithmetic
float32, as bf16. The codebooks' values train (see :meth:`QuantizedLSTM.backward`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from . import _core, interop, reference
from ._args import LayerArguments, require_finite, shape_text
from ._lstm import LSTM

__all__ = ["quantize", "QuantizedLSTM", "QuantizedLinear", "SCHEMES"]

_MATRICES = ("weight_ih", "weight_hh", "weight_hr")


@dataclasses.dataclass
class _Format:
    """How a scheme stores a matrix (N,K) named ``name``: its arrays (suffix -> (shape, dtype)),
    how to make its reference object (whose fields are those arrays, in order) from float32
    weights, and the core's model class. ``gates``: the gate blocks of an LSTM's W_ih and W_hh
    (4, or 3 for CIFG)."""

    arrays: Dict[str, Any]                 # suffix -> (dims(shape, name, gates) -> shape, dtype)
    encode: Any                            # (w, name, seed, gates) -> QuantizedRows | Bfloat16Rows | CodebookRows
    rows: Any                              # the reference's class, built from the arrays
    core: str                              # the _core class
    extra: Any = None                      # (arrays) -> more arguments of the core's set_matrix

    def store(self, name: str, w: np.ndarray, seed: int, gates: int = 4) -> Dict[str, np.ndarray]:
        rows = self.encode(w, name, seed, gates)
        return {f"{name}.{suffix}": getattr(rows, f.name) for suffix, f in zip(self.arrays, dataclasses.fields(rows))}

    def decode(self, arrays: Dict[str, np.ndarray], name: str):
        return self.rows(*(arrays[f"{name}.{suffix}"] for suffix in self.arrays))


def _rows_per_book(indices: np.ndarray, books: np.ndarray) -> Tuple[int]:
    """The codebook formats' set_matrix argument after their arrays."""
    return (indices.shape[0] // books.shape[0],)


_FORMATS = {
    "int8": _Format({"q": (lambda s, n, g: s, np.int8), "scale": (lambda s, n, g: s[:1], np.float32)},
                    lambda w, name, seed, g: reference.quantize_rows_int8(w), reference.QuantizedRows,
                    "QuantizedModelInt8"),
    "bf16": _Format({"bf16": (lambda s, n, g: s, np.uint16)}, lambda w, name, seed, g: reference.to_bfloat16(w),
                    reference.Bfloat16Rows, "QuantizedModelBf16"),
    # 16 values for each row, 4-bit indices
    "codebook4": _Format({"idx": (lambda s, n, g: s, np.uint8), "book": (lambda s, n, g: (s[0], 16), np.float32)},
                         lambda w, name, seed, g: reference.codebook_rows(w, 16, 1, seed), reference.CodebookRows,
                         "QuantizedModelCodebook", _rows_per_book),
    # 256 values for each of the g gate blocks (and for all of W_hr), 8-bit indices
    "codebook8": _Format({"idx": (lambda s, n, g: s, np.uint8),
                          "book": (lambda s, n, g: (1 if n.startswith("weight_hr") else g, 256), np.float32)},
                         lambda w, name, seed, g: reference.codebook_rows(
                             w, 256, w.shape[0] if name.startswith("weight_hr") else w.shape[0] // g, seed),
                         reference.CodebookRows, "QuantizedModelCodebook", _rows_per_book),
}
SCHEMES = tuple(_FORMATS)


def _gates(model: Any) -> int:
    """The gate blocks of ``model``'s W_ih and W_hh."""
    return 3 if getattr(model, "coupled_input_forget", False) else 4


def quantize(model: Any, scheme: str = "int8", *, seed: int = 0) -> Any:
    """A copy of ``model`` whose LSTM matrices are stored in ``scheme``: for an
    :class:`lstmcpp.LSTM` a :class:`QuantizedLSTM`; for a model of :mod:`lstmcpp.models`
    (``CharLM``, ``Forecaster``, ``AttentionClassifier``) the same class with its LSTM quantized
    (and, for int8 and bf16, its Linear layers of 4096 weights or more), whose inference methods
    (``evaluate``, ``generate``, ``forecast``, ``predict``) run on it.

    ``seed`` seeds the codebooks' k-means (the same model and seed give the same codebooks).
    Raises ValueError for an unknown scheme or weights holding NaN or Inf, and TypeError for a
    model it cannot quantize.
    """
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"scheme: expected one of {list(SCHEMES)}, got {scheme!r}")
    if hasattr(model, "children") and isinstance(getattr(model, "lstm", None), LSTM):
        quantized = copy.deepcopy(model)
        for name, child in model.children.items():
            if isinstance(child, LSTM):
                swapped = quantize(child, scheme, seed=seed)
            elif _quantizes_linear(child, scheme):
                swapped = QuantizedLinear.of(child, scheme)
            else:
                continue
            setattr(quantized, name, swapped)
            quantized.children[name] = swapped
        return quantized
    if not isinstance(model, LSTM):
        raise TypeError(f"model: expected an lstmcpp.LSTM or a model of lstmcpp.models, got {type(model).__name__}")
    state = model.state_dict()
    for name, array in state.items():
        if not np.isfinite(array).all():
            raise ValueError(f"model: {name} holds NaN or Inf; it cannot be quantized")
    arrays: Dict[str, np.ndarray] = {}
    for k, (name, array) in enumerate(state.items()):
        if name.split("_l")[0] in _MATRICES:
            arrays.update(_FORMATS[scheme].store(name, array, seed * 1009 + k, _gates(model)))
        else:
            arrays[name] = array.astype(np.float32)
    config = model.get_config()
    config.update(dtype="float32")
    return QuantizedLSTM(config, arrays, scheme)


class QuantizedLSTM(LayerArguments):
    """An LSTM whose matrices are quantized (see :func:`quantize`).

    ``q(x, state=None, *, lengths=None)`` returns ``y, (h_n, c_n)`` exactly as
    :meth:`lstmcpp.LSTM.__call__` does (layers, bidirectional, projection, peepholes, clips,
    lengths, ``batch_first``, unbatched input, initial state, the cell variants), in float32.
    int8 and bf16 models run inference only; the codebook formats also train (``forward``,
    ``backward``, ``named_parameters``, ``grads``: their books' values and the float32 parameters).
    """

    def __init__(self, config: Dict[str, Any], arrays: Dict[str, np.ndarray], scheme: str = "int8"):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme: expected one of {list(SCHEMES)}, got {scheme!r}")
        shape = LSTM(**config)  # checks the configuration; gives the parameter names and shapes
        self.scheme = scheme
        self._config = dict(config)
        for attribute in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional", "reverse",
                          "proj_size", "peepholes", "cell_clip", "proj_clip", "coupled_input_forget", "layer_norm",
                          "mogrify_rounds", "mogrify_rank", "dtype", "check_finite", "num_directions", "output_size"):
            setattr(self, attribute, getattr(shape, attribute))
        self._format = _FORMATS[scheme]
        self._arrays = self._checked(arrays, shape)
        self._core = getattr(_core, self._format.core)(
            self.input_size, self.hidden_size, self.num_layers, self.proj_size, self.bias, self.bidirectional,
            self.peepholes, self.cell_clip or 0.0, self.proj_clip or 0.0, reverse=self.reverse,
            coupled_input_forget=self.coupled_input_forget, layer_norm=self.layer_norm,
            mogrify_rounds=self.mogrify_rounds, mogrify_rank=self.mogrify_rank,
        )
        self._names = list(shape.state_dict())  # the float model's parameters, in its order
        self._push_to_core()
        # Codebook formats train (SPEC §5): their books, biases and peepholes are parameters, the
        # indices fixed; a float32 LSTM decoded from them runs forward and backward.
        self._trainable = scheme.startswith("codebook")
        self._float: Optional[LSTM] = None
        self._grads = {name: np.zeros_like(self._arrays[name]) for name in self._trainable_names()} if self._trainable else {}
        self._stale_core = False  # the books changed (an optimizer step) since the core last read them

    def _push_to_core(self) -> None:
        D = self.num_directions
        for name in self._names:
            base, layer, direction = _parse(name)
            cell = layer * D + direction
            if base in _MATRICES:
                stored = [self._arrays[f"{name}.{suffix}"] for suffix in self._format.arrays]
                extra = self._format.extra(*stored) if self._format.extra else ()
                self._core.set_matrix(cell, base, *stored, *extra)
            else:
                self._core.set_vector(cell, base, self._arrays[name].reshape(-1))

    def _trainable_names(self):
        """The books (``<matrix>.book``) and the float vectors, in the float model's order."""
        return [name + ".book" if name.split("_l")[0] in _MATRICES else name for name in self._names]

    def _checked(self, arrays: Dict[str, np.ndarray], shape: LSTM) -> Dict[str, np.ndarray]:
        """The arrays a model of ``shape``'s configuration needs, each checked, as contiguous copies."""
        expected: Dict[str, Tuple[Tuple[int, ...], Any]] = {}
        for name, p in shape.state_dict().items():
            if name.split("_l")[0] in _MATRICES:
                for suffix, (dims, dtype) in self._format.arrays.items():
                    expected[f"{name}.{suffix}"] = (tuple(dims(p.shape, name, _gates(shape))), dtype)
            else:
                expected[name] = (p.shape, np.float32)
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        if missing or unexpected:
            raise ValueError(f"arrays: missing {missing}, unexpected {unexpected}")
        checked = {}
        for name, (dims, dtype) in expected.items():
            a = np.asarray(arrays[name])
            if a.shape != dims:
                raise ValueError(f"arrays[{name!r}]: expected shape {shape_text(dims)}, got {shape_text(a.shape)}")
            if a.dtype != dtype:
                raise TypeError(f"arrays[{name!r}]: expected dtype {np.dtype(dtype)}, got {a.dtype}")
            if dtype == np.float32 and not np.isfinite(a).all():
                raise ValueError(f"arrays[{name!r}]: holds NaN or Inf")
            checked[name] = np.ascontiguousarray(a).copy()
        return checked

    # ------------------------------------------------------------------------------------------
    # inference

    def __call__(self, x: Any, state: Optional[Tuple[Any, Any]] = None, *, lengths: Any = None):
        """Inference: ``y, (h_n, c_n) = q(x, state, lengths=...)``, as :meth:`lstmcpp.LSTM.__call__`."""
        x3, unbatched = self._input(x)
        h0, c0 = self._state(state, x3.shape[1], unbatched)
        lens = self._lengths(lengths, x3.shape[0], x3.shape[1], unbatched)
        if self.check_finite:
            require_finite(x=x3, h_0=h0, c_0=c0)
        y, h_n, c_n = self._run(x3, h0, c0, lens)
        if self.check_finite:
            require_finite(y=y, h_n=h_n, c_n=c_n)
        return self._outputs(y, h_n, c_n, unbatched)

    def _run(self, x3: np.ndarray, h0: Optional[np.ndarray], c0: Optional[np.ndarray], lengths: Any = None):
        """The core's inference on ready arrays (x (T,B,I), h0, c0 float32 or None): (y, h_n, c_n)."""
        return self._fresh_core().forward(x3, h0, c0, lengths)

    def _fresh_core(self):
        """The core, after it reads the books anew if they trained since it last did."""
        if self._stale_core:
            self._push_to_core()
            self._stale_core = False
        return self._core

    def _step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
        """One stream step in place (ready float32 arrays): out = y_t; (h, c) advanced."""
        self._fresh_core().step(x, h, c, out)

    def _stepper(self) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]:
        """What a stream calls for :meth:`_step`: the step itself (the core reads the books anew
        after they train)."""
        return self._step

    def _pool_step(self, ids: np.ndarray, x: np.ndarray, h: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
        """One stream-pool step (ready float32 arrays): the states of ``ids`` gathered, stepped, scattered back."""
        self._fresh_core().pool_step(ids, x, h, c, out)

    # ------------------------------------------------------------------------------------------
    # training (codebook formats): the values of the books train, the indices stay

    def _decoded(self) -> LSTM:
        """The float32 LSTM with this model's current weights (made once, refreshed every call)."""
        if not self._trainable:
            raise TypeError(f"a QuantizedLSTM in {self.scheme} runs inference only (call it); train the float model, "
                            "then quantize it (the codebook formats train their values)")
        if self._float is None:
            self._float = LSTM(**self._config)
        self._float.load_state_dict(self.dequantize_state())
        return self._float

    def forward(self, x: Any, state: Any = None, *, lengths: Any = None, training: bool = True):
        """As :meth:`lstmcpp.LSTM.forward` (codebook formats only): the decoded weights' forward."""
        return self._decoded().forward(x, state, lengths=lengths, training=training)

    def forward_tokens(self, ids: Any, embedding: Any, state: Any = None, *, lengths: Any = None, training: bool = True):
        """As :meth:`lstmcpp.LSTM.forward_tokens` (codebook formats only)."""
        return self._decoded().forward_tokens(ids, embedding, state, lengths=lengths, training=training)

    def backward(self, cache: Any, dy: Any, dstate: Any = None):
        """As :meth:`lstmcpp.LSTM.backward`; adds into :attr:`grads` each book value's gradient, the
        sum of the gradients of the weights that index it (codebook formats only)."""
        decoded = self._float
        if not self._trainable or decoded is None:
            self._decoded()  # raises for a format that does not train
            raise ValueError("cache: run forward on this model first")
        decoded.zero_grad()
        dx, dstate_0 = decoded.backward(cache, dy, dstate)
        for name, g in decoded.grads.items():
            if name.split("_l")[0] in _MATRICES:
                rows = self._format.decode(self._arrays, name)
                book_of_row = np.arange(rows.indices.shape[0]) // rows.rows_per_book
                np.add.at(self._grads[name + ".book"], (book_of_row[:, None], rows.indices), g)
            else:
                self._grads[name] += g
        self._stale_core = True  # an optimizer step follows: the core reads the books anew before a call
        return dx, dstate_0

    def zero_grad(self) -> None:
        for g in self._grads.values():
            g[...] = 0

    # ------------------------------------------------------------------------------------------
    # what it holds

    def named_parameters(self):
        """What trains: a codebook format's books (``<matrix>.book``), biases and peepholes, as the
        live arrays an optimizer updates; nothing for int8 and bf16."""
        for name in self._trainable_names() if self._trainable else []:
            yield name, self._arrays[name]

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """The gradients of :meth:`named_parameters`, keyed alike (empty for int8 and bf16)."""
        return dict(self._grads)

    def dequantize_state(self) -> Dict[str, np.ndarray]:
        """The float32 state dict the stored weights decode to."""
        state = {}
        for name in self._names:
            if name.split("_l")[0] in _MATRICES:
                state[name] = self._format.decode(self._arrays, name).dequantize()
            else:
                state[name] = self._arrays[name]
        return state

    @property
    def nbytes(self) -> int:
        """Bytes of the stored matrices, their scales included, and of the Mogrifier's float32
        matrices (biases, peepholes and gains not)."""
        return int(self._core.nbytes)

    def export_onnx(self, path: Any = None, *, opset: int = 14, lengths: bool = False, state: bool = False):
        """int8 only: this model as ONNX Runtime's ``com.microsoft.DynamicQuantizeLSTM`` nodes, its
        integers and scales kept, stored as uint8 q + 128 with zero point 128, which ONNX Runtime
        multiplies exactly on every CPU (see :func:`lstmcpp.interop.write_onnx`)."""
        return interop.write_onnx(self, path, opset=opset, lengths=lengths, state=state)

    def dequantize(self) -> LSTM:
        """The float32 :class:`lstmcpp.LSTM` with the decoded weights (each format's decoding)."""
        model = LSTM(**self._config)
        model.load_state_dict(self.dequantize_state())
        return model

    def quantized_params(self) -> Dict[str, Any]:
        """The parameters as :func:`lstmcpp.reference.forward` takes them: each matrix in its
        format's reference object (:class:`lstmcpp.reference.QuantizedRows`, ``Bfloat16Rows``,
        ``CodebookRows``), the rest float32 arrays (copies)."""
        arrays = {k: a.copy() for k, a in self._arrays.items()}
        params: Dict[str, Any] = {}
        for name in self._names:
            params[name] = self._format.decode(arrays, name) if name.split("_l")[0] in _MATRICES else arrays[name]
        return params

    def get_config(self) -> Dict[str, Any]:
        """The float model's constructor arguments (``LSTM(**q.get_config())`` has its shape)."""
        return dict(self._config)

    def _to_native(self):
        return {"lstm": self.get_config(), "scheme": self.scheme}, {k: a.copy() for k, a in self._arrays.items()}

    @classmethod
    def _from_native(cls, config: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> "QuantizedLSTM":
        if not isinstance(config, dict) or "lstm" not in config or "scheme" not in config:
            raise ValueError("config: expected a quantized model's configuration ('lstm' and 'scheme')")
        return cls(config["lstm"], arrays, config["scheme"])

    def __getstate__(self) -> Dict[str, Any]:
        return {"config": self._config, "arrays": self._arrays, "scheme": self.scheme}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["config"], state["arrays"], state["scheme"])

    def __repr__(self) -> str:
        first = next(iter(self._format.arrays))  # each format's first array is (N,K)
        float_bytes = 4 * sum(self._arrays[f"{n}.{first}"].size for n in self._names if n.split("_l")[0] in _MATRICES)
        shape = repr(LSTM(**self._config)).replace("LSTM(", "", 1).rstrip(")")
        return (f"QuantizedLSTM({shape}, scheme={self.scheme!r}, nbytes={self.nbytes:,} "
                f"({self.nbytes / float_bytes:.2f}x float32))")


# ------------------------------------------------------------------------------------------------
# the layers around the LSTM


LINEAR_MIN_WEIGHTS = 4096  # a model's Linear layers this large or larger are quantized too


def _quantizes_linear(child: Any, scheme: str) -> bool:
    """Whether quantize(model, scheme) stores this child in the scheme: a Linear of
    LINEAR_MIN_WEIGHTS weights or more, in int8 or bf16 (a codebook model's Linear layers stay
    float32, as they train with its books)."""
    from .nn import Linear

    return isinstance(child, Linear) and scheme in ("int8", "bf16") and child.params["weight"].size >= LINEAR_MIN_WEIGHTS


class QuantizedLinear:
    """``y = x W^T + b`` with ``W (O, I)`` stored in a scheme (int8: its product is int8's, the
    activations rounded per row; bf16), ``b`` float32; inference only. What :func:`quantize` puts
    in place of a model's large :class:`lstmcpp.nn.Linear`."""

    def __init__(self, arrays: Dict[str, np.ndarray], scheme: str):
        if scheme not in ("int8", "bf16"):
            raise ValueError(f"scheme: a Linear layer is quantized to int8 or bf16, got {scheme!r}")
        self.scheme = scheme
        self._arrays = {k: np.ascontiguousarray(v).copy() for k, v in arrays.items()}
        if scheme == "int8":
            self._matrix = _core.QuantizedMatrixInt8(self._arrays["weight.q"], self._arrays["weight.scale"])
        else:
            self._matrix = _core.QuantizedMatrixBf16(self._arrays["weight.bf16"])

    @classmethod
    def of(cls, linear: Any, scheme: str) -> "QuantizedLinear":
        weight = linear.params["weight"]
        if not np.isfinite(weight).all():
            raise ValueError("model: a Linear layer's weight holds NaN or Inf; it cannot be quantized")
        arrays = _FORMATS[scheme].store("weight", weight, 0)
        if "bias" in linear.params:
            arrays["bias"] = linear.params["bias"].astype(np.float32)
        return cls(arrays, scheme)

    def forward(self, x: np.ndarray, training: bool = False):
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        y = self._matrix.multiply(x2)
        if "bias" in self._arrays:
            y += self._arrays["bias"]
        return y.reshape(x.shape[:-1] + (y.shape[-1],)), None

    def backward(self, cache: Any, dy: np.ndarray):
        raise TypeError(f"a Linear layer in {self.scheme} runs inference only; train the float model, then quantize it")

    def named_parameters(self):
        return iter(())  # nothing trains

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        return {}

    def _to_native(self):
        return {"scheme": self.scheme}, {k: a.copy() for k, a in self._arrays.items()}


def rebuild(float_child: Any, arrays: Dict[str, np.ndarray], scheme: str) -> Any:
    """The quantized twin of a model's child (its LSTM or a Linear) from its stored arrays (a
    model's native file)."""
    if isinstance(float_child, LSTM):
        return QuantizedLSTM(float_child.get_config(), arrays, scheme)
    return QuantizedLinear(arrays, scheme)


def _parse(name: str) -> Tuple[str, int, int]:
    """'weight_hh_l1_reverse' -> ('weight_hh', 1, 1); a Mogrifier matrix's round and factor stay
    in its name: 'weight_mogrify_l0_3_a' -> ('weight_mogrify_3_a', 0, 0)."""
    base, layer, round_, reverse = re.fullmatch(r"(\w+?)_l(\d+)((?:_\d+(?:_[ab])?)?)(_reverse)?", name).groups()
    return base + round_, int(layer), int(bool(reverse))
