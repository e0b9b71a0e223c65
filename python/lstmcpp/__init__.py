"""lstmcpp: a fast CPU LSTM with a C++ core, a drop-in for ``torch.nn.LSTM``.

>>> import lstmcpp, numpy as np
>>> lstm = lstmcpp.LSTM(8, 16)
>>> y, (h_n, c_n) = lstm(np.zeros((10, 4, 8), np.float32))
"""

from __future__ import annotations

from typing import Any, Dict

from . import _core, interop, io, reference
from ._lstm import LSTM, ForwardCache
from ._version import __version__
from .io import load, save

io.register("LSTM", LSTM, LSTM._from_native)

from . import models, nn, optim, train  # noqa: E402  (models registers its kinds with io)
from .quantize import QuantizedLSTM, quantize  # noqa: E402
from .train import fit  # noqa: E402

io.register("QuantizedLSTM", QuantizedLSTM, QuantizedLSTM._from_native)

__all__ = ["LSTM", "ForwardCache", "QuantizedLSTM", "quantize", "reference", "interop", "nn", "optim", "models", "train", "fit",
           "save", "load", "load_onnx", "export_onnx", "set_num_threads", "get_num_threads", "info", "__version__"]


def load_onnx(path_or_model: Any, *, dtype: Any = "float32") -> LSTM:
    """The :class:`LSTM` of an ONNX model's ``LSTM`` node(s): ``LSTM.from_onnx``."""
    return LSTM.from_onnx(path_or_model, dtype=dtype)


def export_onnx(model: Any, path: Any = None, **options: Any) -> Any:
    """Write ``model`` as an ONNX graph (returns the ``onnx.ModelProto``): an :class:`LSTM` (or an
    int8 :class:`QuantizedLSTM`) as :meth:`LSTM.export_onnx` (``opset``, ``lengths``, ``state``); a whole ``CharLM``,
    ``Forecaster`` or ``AttentionClassifier`` as :func:`lstmcpp.interop.write_model_onnx`
    (``opset``). Needs ``pip install onnx``."""
    if isinstance(model, (LSTM, QuantizedLSTM)):
        return model.export_onnx(path, **options)
    if isinstance(model, (models.CharLM, models.Forecaster, models.AttentionClassifier)):
        return interop.write_model_onnx(model, path, **options)
    raise TypeError(f"model: expected an LSTM, CharLM, Forecaster or AttentionClassifier, got {type(model).__name__}")


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in every later call. The default is what OpenMP would use
    (``OMP_NUM_THREADS``, else the CPUs this process may run on)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an integer, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the core uses."""
    return _core.get_num_threads()


def info() -> Dict[str, Any]:
    """Version, float32 kernels in use (and those this CPU supports), what runs each weight
    format's products, threads, BLAS, and the data caches a core sees (bytes, read at run time)."""
    return {
        "version": __version__,
        "isa": _core.isa_in_use(),
        "isa_supported": [n for n in _core.isa_names() if _core.isa_supported(n)],
        "schemes": _core.scheme_kernels(),
        "threads": _core.get_num_threads(),
        "blas": _core.blas_config(),
        "caches": _core.cache_sizes(),
    }
