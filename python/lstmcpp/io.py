"""lstmcpp's own model files: ``save(model, path)`` and ``load(path)``.

A file is an uncompressed ``.npz`` (a zip of ``.npy`` arrays) holding the model's arrays and a
``__header__`` entry: UTF-8 JSON with the format name, its version, the kind of model, its
configuration, and a SHA-256 over every array's name, dtype, shape and bytes. Reading one runs no
code from it: NumPy reads the arrays with ``allow_pickle=False`` and the configuration is plain
JSON. A truncated, corrupted or wrong-version file raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import IO, Any, Callable, Dict, Tuple, Union

import numpy as np

__all__ = ["save", "load", "dumps", "loads", "register"]

FORMAT = "lstmcpp"
VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]

# kind -> (class, from_native(config, arrays) -> object)
_KINDS: Dict[str, Tuple[type, Callable[[Dict[str, Any], Dict[str, np.ndarray]], Any]]] = {}


def register(kind: str, cls: type, from_native: Callable[[Dict[str, Any], Dict[str, np.ndarray]], Any]) -> None:
    """Make ``cls`` savable: its objects provide ``_to_native() -> (config, arrays)``."""
    _KINDS[kind] = (cls, from_native)


def checksum(arrays: Dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def dumps(model: Any) -> bytes:
    """The bytes :func:`save` would write: parameters only (no gradients, no optimizer state), the
    compact form in which :mod:`lstmcpp.dask` ships a model to the workers."""
    kind = next((k for k, (cls, _) in _KINDS.items() if type(model) is cls), None)
    if kind is None:
        raise TypeError(f"model: cannot save a {type(model).__name__}; expected one of {sorted(c.__name__ for c, _ in _KINDS.values())}")
    config, arrays = model._to_native()
    if "__header__" in arrays:
        raise ValueError("model: an array may not be named '__header__'")
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "config": config, "sha256": checksum(arrays)}
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    f = io.BytesIO()
    np.savez(f, __header__=blob, **arrays)
    return f.getvalue()


def save(model: Any, path: PathLike) -> None:
    """Write ``model`` (an :class:`lstmcpp.LSTM`, a quantized model, or a model from
    :mod:`lstmcpp.models`) to ``path``."""
    data = dumps(model)  # all checks pass before the file is opened
    with open(os.fspath(path), "wb") as f:
        f.write(data)


def loads(data: bytes) -> Any:
    """The model of :func:`dumps`'s bytes (checked as :func:`load` checks a file)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    return _read(io.BytesIO(bytes(data)), "data")


def load(path: PathLike) -> Any:
    """Read a model written by :func:`save`."""
    name = os.fspath(path)
    # Our own file object: np.load leaves its own open when the zip turns out broken.
    with open(name, "rb") as f:
        return _read(f, name)


def _read(f: IO[bytes], name: str) -> Any:
    try:
        with np.load(f, allow_pickle=False) as npz:
            if "__header__" not in npz.files:
                raise ValueError(f"{name}: not an lstmcpp model file (no header)")
            header = json.loads(npz["__header__"].tobytes().decode("utf-8"))
            arrays = {k: npz[k] for k in npz.files if k != "__header__"}
    except ValueError as e:
        if str(e).startswith(name):
            raise
        raise ValueError(f"{name}: not a readable lstmcpp model file ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{name}: not a readable lstmcpp model file ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{name}: not an lstmcpp model file (format {header.get('format') if isinstance(header, dict) else header!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{name}: file format version {header.get('version')!r}; this lstmcpp reads version {VERSION}")
    kind = header.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{name}: unknown model kind {kind!r}; known: {sorted(_KINDS)}")
    if checksum(arrays) != header.get("sha256"):
        raise ValueError(f"{name}: checksum mismatch: the file is corrupted")
    return _KINDS[kind][1](header["config"], arrays)
