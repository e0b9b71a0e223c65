"""What the converters share: optional imports that name their pip command, gate-block order."""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

# A converter reads a model of another framework into (arguments of lstmcpp.LSTM, state dict),
# and writes one from an lstmcpp model (read through its attributes and state_dict()).
Converted = Tuple[Dict[str, Any], Dict[str, np.ndarray]]

# Gate blocks along 4H: lstmcpp (like PyTorch and Keras) stacks i, f, g, o; ONNX stacks i, o, f, c.
ONNX_FROM_OURS = [0, 3, 1, 2]  # ONNX block k is our block ONNX_FROM_OURS[k]
OURS_FROM_ONNX = [0, 2, 3, 1]  # our block k is ONNX block OURS_FROM_ONNX[k]
# CIFG (coupled_input_forget, ONNX's input_forget=1) has three blocks, i, g, o; ONNX keeps four
# and ignores the forget block.
CIFG_FROM_ONNX = [0, 3, 1]  # our CIFG block k is ONNX block CIFG_FROM_ONNX[k]


def require(module: str, package: Optional[str] = None):
    """Import ``module``, or raise an ImportError that names the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this needs {module}: pip install {package or module}") from None


def blocks(w: np.ndarray, order: List[int], H: int) -> np.ndarray:
    """The H-row gate blocks of ``w`` (G, ...) or (G,) in ``order`` (block k of the result is block order[k])."""
    return np.concatenate([w[k * H : (k + 1) * H] for k in order])


def with_forget_block(w: np.ndarray, H: int) -> np.ndarray:
    """A CIFG model's (3H, ...) i, g, o as the four blocks i, f, g, o, the forget block zeros."""
    return np.concatenate([w[:H], np.zeros_like(w[:H]), w[H:]])
