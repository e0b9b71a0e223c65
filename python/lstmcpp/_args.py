"""Argument checks and conversions shared by the layer and the blocks around it: every bad
argument gets a TypeError or ValueError that names it and says what was expected and received."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

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
