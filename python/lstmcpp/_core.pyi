"""Type stubs for lstmcpp._core, the C++ extension (private)."""

from typing import List, Optional, Tuple

import numpy as np
import numpy.typing as npt

class CacheF32:
    model_id: int
    steps: int
    batch: int

class CacheF64:
    model_id: int
    steps: int
    batch: int

class ModelF32:
    id: int
    params: npt.NDArray[np.float32]
    grads: npt.NDArray[np.float32]
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, proj_size: int = 0,
                 bias: bool = True, bidirectional: bool = False, peepholes: bool = False,
                 cell_clip: float = 0.0, proj_clip: float = 0.0) -> None: ...
    def layout(self) -> List[Tuple[str, Tuple[int, ...], int]]: ...
    def forward(self, x: npt.NDArray[np.float32], h0: Optional[npt.NDArray[np.float32]] = None,
                c0: Optional[npt.NDArray[np.float32]] = None, lengths: Optional[npt.NDArray[np.int32]] = None,
                dropout_masks: List[npt.NDArray[np.float32]] = ..., keep_cache: bool = False
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[CacheF32]]: ...
    def backward(self, cache: CacheF32, dy: npt.NDArray[np.float32], dh_n: Optional[np.ndarray] = None,
                 dc_n: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...

class ModelF64:
    id: int
    params: npt.NDArray[np.float64]
    grads: npt.NDArray[np.float64]
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, proj_size: int = 0,
                 bias: bool = True, bidirectional: bool = False, peepholes: bool = False,
                 cell_clip: float = 0.0, proj_clip: float = 0.0) -> None: ...
    def layout(self) -> List[Tuple[str, Tuple[int, ...], int]]: ...
    def forward(self, x: npt.NDArray[np.float64], h0: Optional[npt.NDArray[np.float64]] = None,
                c0: Optional[npt.NDArray[np.float64]] = None, lengths: Optional[npt.NDArray[np.int32]] = None,
                dropout_masks: List[npt.NDArray[np.float64]] = ..., keep_cache: bool = False
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[CacheF64]]: ...
    def backward(self, cache: CacheF64, dy: npt.NDArray[np.float64], dh_n: Optional[np.ndarray] = None,
                 dc_n: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def isa_in_use() -> str: ...
def isa_supported(name: str) -> bool: ...
def set_isa(name: str) -> bool: ...
def blas_config() -> str: ...
def sigmoid_f32(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def tanh_f32(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
