"""lstmcpp.LSTM: the layer object. It checks and converts arguments, then calls the C++ core."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from . import _core, interop
from ._args import LayerArguments, as_real_array, check_clip, check_int, require_finite, shape_text, token_ids

State = Tuple[np.ndarray, np.ndarray]


def _sum_rows_by_id(rows: np.ndarray, ids: np.ndarray, vocab: int) -> np.ndarray:
    """(vocab, F): row v the sum of the rows (..., F) whose id (...) is v, in their order. (Sorting
    the ids and summing runs of equal ones is 7x faster than np.add.at at T 100, B 32.)"""
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_ids = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    out = np.zeros((vocab, rows.shape[-1]), rows.dtype)
    out[sorted_ids[starts]] = np.add.reduceat(rows.reshape(-1, rows.shape[-1])[order], starts, axis=0)
    return out


class ForwardCache:
    """What :meth:`LSTM.forward` keeps for :meth:`LSTM.backward` (opaque)."""

    __slots__ = ("_core", "model_id", "steps", "batch", "unbatched", "dropout_masks", "tokens")

    def __init__(self, core_cache: Any, model_id: int, steps: int, batch: int, unbatched: bool,
                 dropout_masks: List[np.ndarray], tokens: bool = False):
        self._core = core_cache
        self.dropout_masks = dropout_masks  # per layer but the last: (T,B,D*P), or empty
        self.model_id = model_id
        self.steps = steps
        self.batch = batch
        self.unbatched = unbatched
        # made by forward_tokens: backward returns the embedding's gradient (a tuple (ids, V): the
        # rows were gathered in Python, and backward sums their gradients by id)
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"<lstmcpp.ForwardCache T={self.steps} B={self.batch}>"


class LSTM(LayerArguments):
    """A multi-layer LSTM, a drop-in for ``torch.nn.LSTM`` on the CPU, with peepholes and clips.

    Parameters
    ----------
    input_size, hidden_size : int
        Features of the input ``I`` and of the cell ``H``.
    num_layers : int, default 1
        Stacked layers; layer ``k > 0`` takes the previous layer's output as input.
    bias : bool, default True
        Whether to use ``bias_ih`` and ``bias_hh``.
    batch_first : bool, default False
        Input and output as ``(B, T, features)`` instead of ``(T, B, features)``.
    dropout : float, default 0.0
        Dropout on every layer's output but the last's, only in ``forward(training=True)``.
    bidirectional : bool, default False
        Run a second, reversed direction and concatenate its outputs.
    reverse : bool, default False
        One direction that reads each sequence from its end (its last real step, with
        ``lengths``): ONNX's ``direction="reverse"``. PyTorch has no such module.
    proj_size : int, default 0
        When > 0, project ``h`` to this size with ``weight_hr`` (``0 < proj_size < hidden_size``).
    peepholes : bool, default False
        Diagonal peephole connections from the cell to the i, f and o gates.
    cell_clip, proj_clip : float or None
        Clip the cell state, and the projected output, to ``[-clip, clip]``.
    coupled_input_forget : bool, default False
        The CIFG cell (ONNX's ``input_forget=1``): the forget gate is ``1 - i``, so there is no
        forget block; the gate blocks are i, g, o (``weight_ih`` is ``(3H, I)``) and the
        peepholes ``(2, H)`` rows i, o.
    layer_norm : bool, default False
        Layer normalisation (Ba et al. 2016): ``z = LN(x W_ih^T)*g_ih + LN(h W_hh^T)*g_hh + b``,
        each over its whole row, and ``m = o * tanh(LN(c)*g_c + b_c)``; parameters
        ``ln_weight_ih_l{k}``, ``ln_weight_hh_l{k}`` (G), ``ln_weight_c_l{k}``, ``ln_bias_c_l{k}`` (H).
    mogrify_rounds : int, default 0
        The Mogrifier (Melis et al. 2020): before each step's gates, x and h gate each other for
        this many rounds (``x = 2*sigmoid(h Q_j^T) * x`` on odd rounds, ``h = 2*sigmoid(x R_j^T) * h``
        on even ones); parameters ``weight_mogrify_l{k}_{j}``.
    mogrify_rank : int, default 0
        When > 0, each Mogrifier matrix is the product of two factors of this rank
        (``weight_mogrify_l{k}_{j}_a``, ``_b``).
    forget_bias : float, default 0.0
        Added to the forget-gate block of ``bias_ih`` at initialisation (Keras' 1.0). With
        ``coupled_input_forget`` it is taken from the input block instead (``1 - sigmoid(z)`` is
        ``sigmoid(-z)``), which biases the forget gate the same way.
    dtype : "float32" or "float64"
        float32 is the fast path; float64 is for gradient checks and exact references.
    seed : int or None
        Seeds the initialisation and the dropout masks.
    check_finite : bool, default False
        Raise ``FloatingPointError`` when an input, state or gradient holds NaN or Inf, or a
        result does. By default they propagate (as in PyTorch) and nothing is checked.

    Examples
    --------
    >>> lstm = LSTM(10, 20, num_layers=2)
    >>> y, (h_n, c_n) = lstm(np.random.randn(5, 3, 10))
    >>> y.shape, h_n.shape
    ((5, 3, 20), (2, 3, 20))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        reverse: bool = False,
        proj_size: int = 0,
        peepholes: bool = False,
        cell_clip: Optional[float] = None,
        proj_clip: Optional[float] = None,
        coupled_input_forget: bool = False,
        layer_norm: bool = False,
        mogrify_rounds: int = 0,
        mogrify_rank: int = 0,
        forget_bias: float = 0.0,
        dtype: Any = "float32",
        seed: Optional[int] = None,
        check_finite: bool = False,
    ):
        self.input_size = check_int("input_size", input_size, 1)
        self.hidden_size = check_int("hidden_size", hidden_size, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        self.proj_size = check_int("proj_size", proj_size, 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be 0 or less than hidden_size ({hidden_size}), got {proj_size}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.cell_clip = check_clip("cell_clip", cell_clip)
        self.proj_clip = check_clip("proj_clip", proj_clip)
        if self.proj_clip is not None and self.proj_size == 0:
            raise ValueError("proj_clip needs a projection (proj_size > 0)")
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, numbers.Real):
            raise TypeError(f"forget_bias must be a number, got {type(forget_bias).__name__}")
        self.forget_bias = float(forget_bias)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.reverse = bool(reverse)
        if self.reverse and self.bidirectional:
            raise ValueError("reverse is for a one-direction model (bidirectional runs both ways already)")
        self.peepholes = bool(peepholes)
        self.coupled_input_forget = bool(coupled_input_forget)
        self.layer_norm = bool(layer_norm)
        self.mogrify_rounds = check_int("mogrify_rounds", mogrify_rounds, 0)
        self.mogrify_rank = check_int("mogrify_rank", mogrify_rank, 0)
        if self.mogrify_rank and not self.mogrify_rounds:
            raise ValueError("mogrify_rank needs mogrify_rounds > 0")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {self.dtype}")
        if seed is not None:
            check_int("seed", seed, 0)
        self.seed = seed
        self.check_finite = bool(check_finite)

        model_class = _core.ModelF32 if self.dtype == np.float32 else _core.ModelF64
        self._core = model_class(
            self.input_size, self.hidden_size, self.num_layers, self.proj_size, self.bias,
            self.bidirectional, self.peepholes, self.cell_clip or 0.0, self.proj_clip or 0.0, reverse=self.reverse,
            coupled_input_forget=self.coupled_input_forget, layer_norm=self.layer_norm,
            mogrify_rounds=self.mogrify_rounds, mogrify_rank=self.mogrify_rank,
        )
        # Named views into the core's flat parameter and gradient buffers.
        flat, flat_grads = self._core.params, self._core.grads
        self._flat_grads = flat_grads
        self._params: Dict[str, np.ndarray] = {}
        self._grads: Dict[str, np.ndarray] = {}
        for name, shape, offset in self._core.layout():
            size = math.prod(shape)
            self._params[name] = flat[offset : offset + size].reshape(shape)
            self._grads[name] = flat_grads[offset : offset + size].reshape(shape)
        # (D*L, P, H): the state's leading and trailing sizes, for the streaming fast path
        self._ready_shapes = (self.num_directions * self.num_layers, self.output_size, self.hidden_size)
        init_seed, dropout_seed = np.random.SeedSequence(seed).spawn(2)
        self._dropout_rng = np.random.default_rng(dropout_seed)
        self.reset_parameters(np.random.default_rng(init_seed))

    # ------------------------------------------------------------------------------------------
    # sizes and parameters

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """``P``: the size of ``h`` (``proj_size`` when projecting, else ``hidden_size``)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def reset_parameters(self, rng: Optional[np.random.Generator] = None) -> None:
        """PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)), plus ``forget_bias``; layer norm's
        gains 1 and its bias 0."""
        rng = np.random.default_rng() if rng is None else rng
        k = 1.0 / math.sqrt(self.hidden_size)
        H = self.hidden_size
        for name, p in self._params.items():
            if name.startswith("ln_"):
                p[...] = 1.0 if name.startswith("ln_weight") else 0.0
                continue
            p[...] = rng.uniform(-k, k, p.shape)
            if name.startswith("bias_ih"):
                if self.coupled_input_forget:  # f = 1 - sigmoid(z_i) = sigmoid(-z_i)
                    p[:H] -= self.forget_bias
                else:
                    p[H : 2 * H] += self.forget_bias

    def parameters(self) -> List[np.ndarray]:
        """The parameter arrays themselves (writable views into the model), in state-dict order."""
        return list(self._params.values())

    def named_parameters(self) -> Iterator[Tuple[str, np.ndarray]]:
        return iter(self._params.items())

    def gradients(self) -> List[np.ndarray]:
        """The gradient arrays, in the order of :meth:`parameters` (what optimizers take)."""
        return list(self._grads.values())

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """Gradient arrays keyed like :meth:`state_dict`; :meth:`backward` adds into them."""
        return dict(self._grads)

    def zero_grad(self) -> None:
        self._flat_grads[...] = 0

    def num_parameters(self) -> int:
        return sum(p.size for p in self._params.values())

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of every parameter under PyTorch's names (plus ``weight_peephole_l{k}``)."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load parameters (NumPy arrays, torch tensors, anything ``np.asarray`` takes).

        Every entry is checked before any is copied, so a bad dict leaves the model unchanged.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        missing = [n for n in self._params if n not in state_dict]
        unexpected = [n for n in state_dict if n not in self._params]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict: missing keys {missing}, unexpected keys {unexpected}")
        arrays = {}
        for name, target in self._params.items():
            if name not in state_dict:
                continue
            a = as_real_array(state_dict[name], f"state_dict[{name!r}]", self.dtype)
            if a.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}]: expected shape {shape_text(target.shape)}, got {shape_text(a.shape)}")
            arrays[name] = a
        for name, a in arrays.items():
            self._params[name][...] = a

    # ------------------------------------------------------------------------------------------
    # configuration, files, pickling and other frameworks

    def get_config(self) -> Dict[str, Any]:
        """The constructor's arguments (but ``seed``): ``LSTM(**lstm.get_config())`` rebuilds it."""
        return dict(
            input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers, bias=self.bias,
            batch_first=self.batch_first, dropout=self.dropout, bidirectional=self.bidirectional, reverse=self.reverse,
            proj_size=self.proj_size, peepholes=self.peepholes, cell_clip=self.cell_clip, proj_clip=self.proj_clip,
            coupled_input_forget=self.coupled_input_forget, layer_norm=self.layer_norm,
            mogrify_rounds=self.mogrify_rounds, mogrify_rank=self.mogrify_rank, forget_bias=self.forget_bias,
            dtype=str(self.dtype),
            check_finite=self.check_finite,
        )

    def _to_native(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        return self.get_config(), self.state_dict()

    @classmethod
    def _from_native(cls, config: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> "LSTM":
        model = cls(**config)
        model.load_state_dict(arrays)
        return model

    def __getstate__(self) -> Dict[str, Any]:
        # Parameters and gradients by value; the C++ core is rebuilt from the configuration.
        return {"config": self.get_config(), "seed": self.seed, "params": self.state_dict(),
                "grads": {k: g.copy() for k, g in self._grads.items()},
                "dropout_rng": self._dropout_rng.bit_generator.state}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(**state["config"], seed=state["seed"])
        self.load_state_dict(state["params"])
        for k, g in state["grads"].items():
            self._grads[k][...] = g
        self._dropout_rng.bit_generator.state = state["dropout_rng"]

    @classmethod
    def _from_converted(cls, converted) -> "LSTM":
        arguments, state = converted
        model = cls(**arguments)
        model.load_state_dict(state)
        return model

    @classmethod
    def from_torch(cls, module: Any, *, dtype: Any = None):
        """A copy of a ``torch.nn.LSTM`` (configuration and weights; dtype by default its own). Given
        PyTorch's dynamic-quantized LSTM (``torch.ao.nn.quantized.dynamic.LSTM``), an int8
        :class:`lstmcpp.QuantizedLSTM` that keeps its int8 weights."""
        if interop.is_torch_quantized(module):
            from .quantize import QuantizedLSTM  # the quantized layer builds on this module

            arguments, arrays = interop.read_torch_quantized(module)
            return QuantizedLSTM(arguments, arrays, "int8")
        return cls._from_converted(interop.read_torch(module, dtype))

    def to_torch(self):
        """A ``torch.nn.LSTM`` with this model's weights (refused for peepholes and clips)."""
        return interop.write_torch(self)

    @classmethod
    def from_keras(cls, layer: Any, *, dtype: Any = "float32") -> "LSTM":
        """A copy of a Keras 3 ``LSTM`` or ``Bidirectional(LSTM)`` layer (``batch_first=True``);
        see :func:`lstmcpp.interop.read_keras` for what is refused."""
        return cls._from_converted(interop.read_keras(layer, dtype))

    @classmethod
    def from_onnx(cls, path_or_model: Any, *, dtype: Any = "float32"):
        """The LSTM of an ONNX model's ``LSTM`` node(s) (a path, bytes or an ``onnx.ModelProto``);
        see :func:`lstmcpp.interop.read_onnx`. For ONNX Runtime's ``DynamicQuantizeLSTM`` nodes,
        an int8 :class:`lstmcpp.QuantizedLSTM` that keeps their int8 weights."""
        if interop.onnx_is_quantized(path_or_model):
            from .quantize import QuantizedLSTM  # the quantized layer builds on this module

            arguments, arrays = interop.read_onnx_quantized(path_or_model)
            return QuantizedLSTM(arguments, arrays, "int8")
        return cls._from_converted(interop.read_onnx(path_or_model, dtype))

    def export_onnx(self, path: Any = None, *, opset: int = 14, lengths: bool = False, state: bool = False):
        """Write this model as an ONNX graph of ``LSTM`` nodes taking ``x`` (and ``lengths``, and the
        initial state ``h0``, ``c0``, when asked); see :func:`lstmcpp.interop.write_onnx`."""
        return interop.write_onnx(self, path, opset=opset, lengths=lengths, state=state)

    # ------------------------------------------------------------------------------------------
    # forward and backward

    def __call__(self, x: Any, state: Optional[State] = None, *, lengths: Any = None):
        """Inference: ``y, (h_n, c_n) = lstm(x, state, lengths=...)``. Keeps nothing for backward."""
        if lengths is None and type(x) is np.ndarray and x.ndim == 3 and not self.check_finite:
            # The streaming case: arrays already of the right dtype, shape and layout, checked in
            # full here with as few Python operations as possible (each costs ~50-100 ns; these
            # checks written as method calls cost 0.3 us more per call). Anything else takes the
            # general path below, which converts and checks every argument.
            T, B, I = x.shape
            dtype, ready = self.dtype, self._ready_shapes
            if (x.dtype == dtype and I == self.input_size and T and B and not self.batch_first and x.flags.c_contiguous):
                if state is None:
                    y, h_n, c_n, _ = self._core.forward(x)
                    return y, (h_n, c_n)
                if type(state) is tuple and len(state) == 2:
                    h0, c0 = state
                    if (type(h0) is np.ndarray and type(c0) is np.ndarray and h0.dtype == dtype and c0.dtype == dtype
                            and h0.shape == (ready[0], B, ready[1]) and c0.shape == (ready[0], B, ready[2])
                            and h0.flags.c_contiguous and c0.flags.c_contiguous):
                        y, h_n, c_n, _ = self._core.forward(x, h0, c0)
                        return y, (h_n, c_n)
        x3, unbatched = self._input(x)
        h0, c0 = self._state(state, x3.shape[1], unbatched)
        lens = self._lengths(lengths, x3.shape[0], x3.shape[1], unbatched)
        if self.check_finite:
            require_finite(x=x3, h_0=h0, c_0=c0)
        y, h_n, c_n, _ = self._core.forward(x3, h0, c0, lens, [], False)
        if self.check_finite:
            require_finite(y=y, h_n=h_n, c_n=c_n)
        return self._outputs(y, h_n, c_n, unbatched)

    def _run(self, x3: np.ndarray, h0: np.ndarray, c0: np.ndarray):
        """The core's inference on ready arrays (x (T,B,I), h0, c0 of the model's dtype): (y, h_n, c_n)."""
        y, h_n, c_n, _ = self._core.forward(x3, h0, c0)
        return y, h_n, c_n

    def _step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
        """One stream step in place (ready arrays of the model's dtype): out = y_t; (h, c) advanced."""
        self._core.step(x, h, c, out)

    def _stepper(self) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]:
        """What a stream calls for :meth:`_step`, checked arrays or not: the core's own step (the
        core is the model's for its life)."""
        return self._core.step

    def _pool_step(self, ids: np.ndarray, x: np.ndarray, h: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
        """One stream-pool step (ready arrays): the states of ``ids`` in (h, c) gathered, stepped, scattered back."""
        self._core.pool_step(ids, x, h, c, out)

    def forward(self, x: Any, state: Optional[State] = None, *, lengths: Any = None, training: bool = True):
        """Forward pass that keeps what :meth:`backward` needs.

        Returns ``y, (h_n, c_n), cache``. ``training=True`` applies dropout between layers.
        """
        x3, unbatched = self._input(x)
        if self.check_finite:
            require_finite(x=x3)
        return self._forward(x3, None, unbatched, state, lengths, training)

    def forward_tokens(self, ids: Any, embedding: Any, state: Optional[State] = None, *, lengths: Any = None,
                       training: bool = True):
        """:meth:`forward` with layer 0 reading ``embedding[ids]``, the input of a language model.

        ``ids`` are integers in ``[0, V)`` shaped ``(T, B)`` (``(B, T)`` when ``batch_first``;
        ``(T,)`` unbatched), ``embedding`` is ``(V, input_size)``. The results equal
        ``forward(embedding[ids], ...)`` up to rounding, but each token's input projection is made
        once instead of at every step it occurs, and :meth:`backward` returns the gradient of
        ``embedding`` ``(V, input_size)`` in place of ``dx``.
        """
        a = token_ids(ids)
        if a.ndim not in (1, 2):
            raise ValueError(f"ids: expected a 2-D ({'B, T' if self.batch_first else 'T, B'}) or 1-D (T,) array, "
                             f"got shape {shape_text(a.shape)}")
        unbatched = a.ndim == 1
        a = a[:, None] if unbatched else (a.T if self.batch_first else a)
        if a.shape[0] == 0:
            raise ValueError("ids: expected at least one time step, got T = 0")
        if a.shape[1] == 0:
            raise ValueError("ids: expected a batch of at least one, got B = 0")
        table = as_real_array(embedding, "embedding", self.dtype)
        if table.ndim != 2 or table.shape[1] != self.input_size or table.shape[0] == 0:
            raise ValueError(f"embedding: expected shape (V, {self.input_size}) with V >= 1, got {shape_text(table.shape)}")
        token_ids(a, table.shape[0])
        if self.check_finite:
            require_finite(embedding=table)
        if self.layer_norm or self.mogrify_rounds:
            # These cells project each step's input inside the step (the Mogrifier changes it first;
            # layer norm normalises it alone), so a table of projected tokens has nothing to save:
            # the rows are gathered here and backward scatters their gradient.
            y, state_n, cache = self._forward(np.ascontiguousarray(table[a]), None, unbatched, state, lengths, training)
            cache.tokens = (np.ascontiguousarray(a), table.shape[0])
            return y, state_n, cache
        return self._forward(np.ascontiguousarray(a, dtype=np.int32), table, unbatched, state, lengths, training)

    def _forward(self, x3: np.ndarray, embedding: Optional[np.ndarray], unbatched: bool, state: Any, lengths: Any,
                 training: bool):
        """forward for x (T,B,I), or with an embedding for ids (T,B) into it."""
        T, B = x3.shape[0], x3.shape[1]
        h0, c0 = self._state(state, B, unbatched)
        lens = self._lengths(lengths, T, B, unbatched)
        masks = []
        if training and self.dropout > 0 and self.num_layers > 1:
            keep = 1.0 - self.dropout
            shape = (T, B, self.num_directions * self.output_size)
            masks = [((self._dropout_rng.random(shape) < keep) / keep).astype(self.dtype) for _ in range(self.num_layers - 1)]
        if self.check_finite:
            require_finite(h_0=h0, c_0=c0)
        y, h_n, c_n, core_cache = self._core.forward(x3, h0, c0, lens, masks, True, embedding)
        if self.check_finite:
            require_finite(y=y, h_n=h_n, c_n=c_n)
        cache = ForwardCache(core_cache, self._core.id, T, B, unbatched, masks, tokens=embedding is not None)
        y, state_n = self._outputs(y, h_n, c_n, unbatched)
        return y, state_n, cache

    def backward(self, cache: ForwardCache, dy: Any, dstate: Optional[Tuple[Any, Any]] = None):
        """Backpropagate through the forward pass that made ``cache``.

        ``dy`` is the gradient of the loss for ``y`` (same shape as ``y``); ``dstate`` the
        gradients for ``(h_n, c_n)`` (either may be None). Adds every parameter's gradient into
        :attr:`grads` and returns ``dx, (dh_0, dc_0)`` shaped like ``x`` and the state (after
        :meth:`forward_tokens`: the embedding's gradient ``(V, input_size)`` in place of ``dx``).
        """
        if not isinstance(cache, ForwardCache):
            raise TypeError(f"cache: expected the cache returned by LSTM.forward, got {type(cache).__name__}")
        if cache.model_id != self._core.id:
            raise ValueError("cache: it was made by another model's forward; pass this model's cache")
        T, B, unbatched = cache.steps, cache.batch, cache.unbatched
        DP = self.num_directions * self.output_size
        dy3 = as_real_array(dy, "dy", self.dtype)
        expected = (T, DP) if unbatched else ((B, T, DP) if self.batch_first else (T, B, DP))
        if dy3.shape != expected:
            raise ValueError(f"dy: expected shape {shape_text(expected)} (the shape of y), got {shape_text(dy3.shape)}")
        if unbatched:
            dy3 = dy3[:, None, :]
        elif self.batch_first:
            dy3 = np.ascontiguousarray(dy3.transpose(1, 0, 2))
        dh_n, dc_n = None, None
        if dstate is not None:
            if not isinstance(dstate, (tuple, list)) or len(dstate) != 2:
                raise TypeError("dstate: expected a pair (dh_n, dc_n), either of which may be None")
            dh_n = None if dstate[0] is None else self._state_array(dstate[0], "dh_n", self.output_size, B, unbatched)
            dc_n = None if dstate[1] is None else self._state_array(dstate[1], "dc_n", self.hidden_size, B, unbatched)
        if self.check_finite:
            require_finite(dy=dy3, dh_n=dh_n, dc_n=dc_n)
        dx, dh0, dc0 = self._core.backward(cache._core, dy3, dh_n, dc_n)
        if isinstance(cache.tokens, tuple):  # tokens gathered by forward_tokens: their rows' gradients summed
            dx = _sum_rows_by_id(dx, *cache.tokens)
        if self.check_finite:
            require_finite(dx=dx, dh_0=dh0, dc_0=dc0, **{"gradient of " + k: g for k, g in self._grads.items()})
        if cache.tokens:
            return dx, ((dh0[:, 0], dc0[:, 0]) if unbatched else (dh0, dc0))
        if unbatched:
            return dx[:, 0], (dh0[:, 0], dc0[:, 0])
        return (dx.transpose(1, 0, 2) if self.batch_first else dx), (dh0, dc0)

    def __repr__(self) -> str:
        extras = [f"num_layers={self.num_layers}"] if self.num_layers != 1 else []
        for name, default in [("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False),
                              ("reverse", False), ("proj_size", 0), ("peepholes", False), ("cell_clip", None), ("proj_clip", None),
                              ("coupled_input_forget", False), ("layer_norm", False), ("mogrify_rounds", 0),
                              ("mogrify_rank", 0)]:
            value = getattr(self, name)
            if value != default:
                extras.append(f"{name}={value!r}")
        if self.dtype != np.float32:
            extras.append(f"dtype='{self.dtype}'")
        return f"LSTM({', '.join([str(self.input_size), str(self.hidden_size)] + extras)})"
