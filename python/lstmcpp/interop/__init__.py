"""Moving weights in and out: PyTorch, Keras 3 and ONNX.

None of torch, keras, onnx or onnxruntime is needed to import lstmcpp; each converter imports
what it needs and says which package to install when it is missing. The converters work on data:
``read_*`` give the arguments and state dict of an equal :class:`lstmcpp.LSTM`, ``write_*`` take
an lstmcpp model. They import nothing of lstmcpp's layer; the layer's ``from_torch``,
``to_torch``, ``from_keras``, ``from_onnx`` and ``export_onnx`` (and ``lstmcpp.load_onnx``) call them.
"""

from .keras_layer import read_keras
from .onnx_graph import onnx_is_quantized, read_onnx, read_onnx_quantized, write_model_onnx, write_onnx
from .torch_module import is_torch_quantized, read_torch, read_torch_quantized, write_torch

__all__ = ["read_torch", "read_torch_quantized", "is_torch_quantized", "write_torch", "read_keras", "read_onnx", "read_onnx_quantized", "onnx_is_quantized",
           "write_onnx", "write_model_onnx"]
