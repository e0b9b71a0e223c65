"""Building blocks around the LSTM, in its explicit style: ``y, cache = block.forward(x)``,
``dx = block.backward(cache, dy)`` (gradients add into ``block.grads``), plus the losses.

Every block keeps its parameters in ``params`` and their gradients in ``grads`` (same names), so
optimizers, files and gradient checks treat all blocks, and the LSTM, alike.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import _core
from ._args import token_ids

__all__ = ["matmul", "Module", "Embedding", "Linear", "Dropout", "AttentionPool", "softmax_cross_entropy", "mse", "log_softmax"]


def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False,
           out: Optional[np.ndarray] = None, accumulate: bool = False) -> np.ndarray:
    """``op(a) @ op(b)`` of 2-D arrays (``+=`` into ``out`` when ``accumulate``) on lstmcpp's own
    BLAS and threads (NumPy's BLAS threads, once woken, spin on the cores the LSTM needs)."""
    if a.dtype == np.float32 and b.dtype == np.float32:
        return _core.matmul_f32(np.ascontiguousarray(a), np.ascontiguousarray(b), trans_a, trans_b, out, accumulate)
    if a.dtype == np.float64 and b.dtype == np.float64:
        return _core.matmul_f64(np.ascontiguousarray(a), np.ascontiguousarray(b), trans_a, trans_b, out, accumulate)
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if out is None:
        return product
    if accumulate:
        out += product
    else:
        out[...] = product
    return out


class Module:
    """Named parameters and gradients; composite modules list their children in ``children``."""

    params: Dict[str, np.ndarray]
    grads: Dict[str, np.ndarray]
    children: Dict[str, Any]

    def __init__(self) -> None:
        self.params, self.grads, self.children = {}, {}, {}

    def _add(self, name: str, value: np.ndarray) -> np.ndarray:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, np.ndarray]]:
        for name, p in self.params.items():
            yield prefix + name, p
        for child_name, child in self.children.items():
            yield from _named(child, prefix + child_name + ".", "params")

    def named_gradients(self, prefix: str = "") -> Iterator[Tuple[str, np.ndarray]]:
        for name, g in self.grads.items():
            yield prefix + name, g
        for child_name, child in self.children.items():
            yield from _named(child, prefix + child_name + ".", "grads")

    def parameters(self) -> List[np.ndarray]:
        return [p for _, p in self.named_parameters()]

    def gradients(self) -> List[np.ndarray]:
        """The gradient arrays, in the order of :meth:`parameters`."""
        return [g for _, g in self.named_gradients()]

    def zero_grad(self) -> None:
        for g in self.gradients():
            g[...] = 0

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {name: p.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Load every parameter (checked first: a bad dict changes nothing)."""
        own = dict(self.named_parameters())
        missing, unexpected = [n for n in own if n not in state], [n for n in state if n not in own]
        if missing or unexpected:
            raise ValueError(f"state_dict: missing keys {missing}, unexpected keys {unexpected}")
        arrays = {}
        for name, p in own.items():
            a = np.asarray(state[name])
            if a.shape != p.shape:
                raise ValueError(f"state_dict[{name!r}]: expected shape {p.shape}, got {a.shape}")
            arrays[name] = a
        for name, a in arrays.items():
            own[name][...] = a


def _named(child: Any, prefix: str, what: str) -> Iterator[Tuple[str, np.ndarray]]:
    if not isinstance(child, Module):  # an LSTM or a QuantizedLSTM
        items = child.named_parameters() if what == "params" else child.grads.items()
        for name, a in items:
            yield prefix + name, a
    else:
        yield from (child.named_parameters(prefix) if what == "params" else child.named_gradients(prefix))


# ------------------------------------------------------------------------------------------------
# blocks


class Embedding(Module):
    """``weight (V, E)``; ``forward(ids)`` gives ``weight[ids]`` for integer ids of any shape."""

    def __init__(self, num_embeddings: int, dim: int, *, dtype: Any = "float32", rng: Optional[np.random.Generator] = None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        self._add("weight", rng.standard_normal((num_embeddings, dim)).astype(dtype))

    def forward(self, ids: np.ndarray, training: bool = True):
        ids = token_ids(ids, self.params["weight"].shape[0])
        return self.params["weight"][ids], ids

    def backward(self, ids: np.ndarray, dy: np.ndarray) -> None:
        # forward was: y = weight[ids]   so: weight's rows gather the gradients of their uses
        np.add.at(self.grads["weight"], ids.reshape(-1), dy.reshape(-1, dy.shape[-1]))


class Linear(Module):
    """``y = x weight^T + bias`` over the last axis; ``weight (O, I)``, PyTorch's init."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, dtype: Any = "float32",
                 rng: Optional[np.random.Generator] = None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        k = 1.0 / np.sqrt(in_features)
        self._add("weight", rng.uniform(-k, k, (out_features, in_features)).astype(dtype))
        if bias:
            self._add("bias", rng.uniform(-k, k, out_features).astype(dtype))

    def forward(self, x: np.ndarray, training: bool = True):
        x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        y = matmul(x2, self.params["weight"], trans_b=True)
        if "bias" in self.params:
            y += self.params["bias"]
        return y.reshape(x.shape[:-1] + (y.shape[-1],)), x2

    def backward(self, x2: np.ndarray, dy: np.ndarray) -> np.ndarray:
        # forward was: y = x W^T + b   so: dW += dy^T x; db += sum(dy); dx = dy W
        dy2 = np.ascontiguousarray(dy).reshape(-1, dy.shape[-1])
        matmul(dy2, x2, trans_a=True, out=self.grads["weight"], accumulate=True)
        if "bias" in self.params:
            self.grads["bias"] += dy2.sum(0)
        return matmul(dy2, self.params["weight"]).reshape(dy.shape[:-1] + (x2.shape[-1],))


class Dropout(Module):
    """Inverted dropout: zero each element with probability ``p`` when training, scale the rest."""

    def __init__(self, p: float, *, rng: Optional[np.random.Generator] = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = p
        self.rng = np.random.default_rng() if rng is None else rng

    def forward(self, x: np.ndarray, training: bool = True):
        if not training or self.p == 0.0:
            return x, None
        mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / (1.0 - self.p)
        return x * mask, mask

    def backward(self, mask: Optional[np.ndarray], dy: np.ndarray) -> np.ndarray:
        return dy if mask is None else dy * mask


def _length_mask(lengths: Optional[np.ndarray], B: int, T: int) -> np.ndarray:
    """(B,T) True where the step is real."""
    if lengths is None:
        return np.ones((B, T), bool)
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


class AttentionPool(Module):
    """Additive self-attention pooling over time (the notes' LSTM + self-attention model).

    ``e_t = v . tanh(W h_t + b)``, ``a = softmax(e)`` over the real steps of each sequence (its
    ``lengths``), ``context = sum_t a_t h_t``. ``forward(h (B,T,D), lengths)`` returns
    ``(context (B,D), weights (B,T))`` and the cache.
    """

    def __init__(self, dim: int, attention_dim: int, *, dtype: Any = "float32", rng: Optional[np.random.Generator] = None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        k = 1.0 / np.sqrt(dim)
        self._add("weight", rng.uniform(-k, k, (attention_dim, dim)).astype(dtype))
        self._add("bias", np.zeros(attention_dim, dtype))
        self._add("v", rng.uniform(-k, k, attention_dim).astype(dtype))

    def forward(self, h: np.ndarray, lengths: Optional[np.ndarray] = None, training: bool = True):
        B, T, D = h.shape
        u = np.tanh(matmul(h.reshape(B * T, D), self.params["weight"], trans_b=True).reshape(B, T, -1)
                    + self.params["bias"])                               # (B,T,A)
        e = u @ self.params["v"]                                        # (B,T)
        mask = _length_mask(lengths, B, T)
        e = np.where(mask, e, -np.inf)
        a = np.exp(e - e.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)                               # (B,T), zero past each length
        context = np.einsum("bt,btd->bd", a, h)
        return (context, a), (h, u, a)

    def backward(self, cache, dcontext: np.ndarray) -> np.ndarray:
        h, u, a = cache
        # forward was: context = sum_t a_t h_t   so: dh_t = a_t dcontext; da_t = dcontext . h_t
        dh = a[:, :, None] * dcontext[:, None, :]
        da = np.einsum("bd,btd->bt", dcontext, h)
        # forward was: a = softmax(e)   so: de = a * (da - sum(a * da))   (zero where masked: a = 0)
        de = a * (da - (a * da).sum(axis=1, keepdims=True))
        # forward was: e = u . v, u = tanh(h W^T + b)
        self.grads["v"] += np.einsum("bt,bta->a", de, u)
        dz = de[:, :, None] * self.params["v"] * (1.0 - u * u)
        dz2 = np.ascontiguousarray(dz).reshape(-1, dz.shape[-1])
        h2 = np.ascontiguousarray(h).reshape(-1, h.shape[-1])
        matmul(dz2, h2, trans_a=True, out=self.grads["weight"], accumulate=True)
        self.grads["bias"] += dz2.sum(0)
        return dh + matmul(dz2, self.params["weight"]).reshape(dh.shape)


# ------------------------------------------------------------------------------------------------
# losses: each returns (loss, d loss / d prediction)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray, mask: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy (nats) of ``logits (..., V)`` against integer ``targets (...)``.

    ``mask`` (same shape as ``targets``) leaves out padding: the mean is over its true entries.
    Returns ``(loss, dlogits)``. One pass over the logits in C++ (float32 stays float32; any
    other dtype is computed in float64).
    """
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets: expected shape {logits.shape[:-1]}, got {targets.shape}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets: expected integers, got dtype {targets.dtype}")
    single = logits.dtype == np.float32
    dtype = np.float32 if single else np.float64
    V = logits.shape[-1]
    weights = None if mask is None else np.ascontiguousarray(mask, dtype).reshape(-1)
    count = max(float(targets.size if weights is None else weights.sum()), 1.0)
    kernel = _core.softmax_cross_entropy_f32 if single else _core.softmax_cross_entropy_f64
    total, dlogits = kernel(np.ascontiguousarray(logits, dtype).reshape(-1, V),
                            np.ascontiguousarray(targets, np.int32).reshape(-1), weights, 1.0 / count)
    return total / count, dlogits.reshape(logits.shape).astype(logits.dtype, copy=False)


def mse(prediction: np.ndarray, target: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean squared error and its gradient for ``prediction``. The two must have one shape: a
    target that merely broadcasts ((B, 1) against (B, 1, 1)) would train on the wrong loss."""
    if np.shape(prediction) != np.shape(target):
        raise ValueError(f"target: expected the prediction's shape {np.shape(prediction)}, got {np.shape(target)}")
    diff = prediction - target
    return float(np.mean(diff * diff)), (2.0 / diff.size) * diff
