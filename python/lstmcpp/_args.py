"""Argument checks and conversions shared by the layer and the blocks around it: every bad
argument gets a TypeError or ValueError that names it and says what was expected and received."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple

import numpy as np


def shape_text(dims) -> str:
    dims = tuple(dims)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def require_finite(**arrays: Optional[np.ndarray]) -> None:
    for name, a in arrays.items():
        if a is not None and not np.isfinite(a).all():
            raise FloatingPointError(f"{name}: holds NaN or Inf (check_finite=True)")


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_clip(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number or None, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number or None, got {value}")
    return float(value)


def as_real_array(value: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``; TypeError for non-real data."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: expected a real-valued array, could not convert: {e}") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real-valued array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def token_ids(ids: Any, vocab: Optional[int] = None) -> np.ndarray:
    """``ids`` as an integer array (a torch tensor converted); TypeError for other dtypes, and,
    given ``vocab``, ValueError for an id outside ``0..vocab-1``."""
    a = ids.detach().cpu().numpy() if hasattr(ids, "detach") and hasattr(ids, "numpy") else np.asarray(ids)
    if a.dtype.kind not in "iu":
        raise TypeError(f"ids: expected integers, got dtype {a.dtype}")
    if vocab is not None and a.size and (a.min() < 0 or a.max() >= vocab):
        raise ValueError(f"ids: every id must be in 0..{vocab - 1}, got min {a.min()} and max {a.max()}")
    return a


class LayerArguments:
    """Converts and checks a layer call's arguments against the layer's sizes: the input ``x``, the
    state ``(h_0, c_0)``, ``lengths``, and shapes the outputs back. For :class:`lstmcpp.LSTM` and
    :class:`lstmcpp.QuantizedLSTM`, which set ``input_size``, ``hidden_size``, ``num_layers``,
    ``batch_first`` and ``dtype`` and have ``num_directions`` and ``output_size``."""

    def _input(self, x: Any) -> Tuple[np.ndarray, bool]:
        """x as a C-contiguous (T,B,I) array of the model's dtype, and whether it was unbatched."""
        a = as_real_array(x, "x", self.dtype)
        if a.ndim == 2:
            expected = f"(T, {self.input_size})"
            unbatched = True
        elif a.ndim == 3:
            expected = f"(B, T, {self.input_size})" if self.batch_first else f"(T, B, {self.input_size})"
            unbatched = False
        else:
            raise ValueError(f"x: expected a 3-D (T, B, I) or 2-D (T, I) array, got shape {shape_text(a.shape)}")
        if a.shape[-1] != self.input_size:
            raise ValueError(f"x: expected shape {expected}, got {shape_text(a.shape)}")
        if unbatched:
            a = a[:, None, :]
        elif self.batch_first:
            a = np.ascontiguousarray(a.transpose(1, 0, 2))
        if a.shape[0] == 0:
            raise ValueError(f"x: expected at least one time step, got shape {shape_text(a.shape)} with T = 0")
        if a.shape[1] == 0:
            raise ValueError("x: expected a batch of at least one, got B = 0")
        return a, unbatched

    def _state_array(self, value: Any, name: str, size: int, B: int, unbatched: bool) -> np.ndarray:
        DL = self.num_directions * self.num_layers
        a = as_real_array(value, name, self.dtype)
        expected = (DL, size) if unbatched else (DL, B, size)
        if a.shape != expected:
            raise ValueError(f"{name}: expected shape {shape_text(expected)}, got {shape_text(a.shape)}")
        return a[:, None, :] if unbatched else a

    def _state(self, state: Any, B: int, unbatched: bool):
        if state is None:
            return None, None
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"state: expected a pair (h_0, c_0), got {type(state).__name__}")
        return (self._state_array(state[0], "h_0", self.output_size, B, unbatched),
                self._state_array(state[1], "c_0", self.hidden_size, B, unbatched))

    def _lengths(self, lengths: Any, T: int, B: int, unbatched: bool) -> Optional[np.ndarray]:
        if lengths is None:
            return None
        if hasattr(lengths, "detach") and hasattr(lengths, "numpy"):
            lengths = lengths.detach().cpu().numpy()
        a = np.asarray(lengths)
        if a.dtype.kind not in "iu":
            raise TypeError(f"lengths: expected integers, got dtype {a.dtype}")
        if unbatched and a.ndim == 0:
            a = a.reshape(1)
        if a.shape != (B,):
            raise ValueError(f"lengths: expected shape {shape_text((B,))}, got {shape_text(a.shape)}")
        if a.size and (a.min() < 1 or a.max() > T):
            raise ValueError(f"lengths: every length must be in 1..{T} (T), got min {a.min()} and max {a.max()}")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _outputs(self, y: np.ndarray, h_n: np.ndarray, c_n: np.ndarray, unbatched: bool):
        if unbatched:
            return y[:, 0], (h_n[:, 0], c_n[:, 0])
        return (y.transpose(1, 0, 2) if self.batch_first else y), (h_n, c_n)


    # streaming (SPEC §6): see lstmcpp.streams

    def stream(self, batch: Optional[int] = None):
        """A :class:`lstmcpp.streams.Stream`: one sequence (``batch`` of them in lockstep) advanced
        one step per call, its state kept inside."""
        from .streams import Stream

        return Stream(self, batch)

    def stream_pool(self, capacity: int):
        """A :class:`lstmcpp.streams.StreamPool` of ``capacity`` independent sequences."""
        from .streams import StreamPool

        return StreamPool(self, capacity)
