"""Streaming inference (SPEC §6): a sequence advanced one step per call with its state kept
inside (``lstm.stream()``), and a pool of many such sequences advanced together in one batched
step (``lstm.stream_pool(capacity)``). For :class:`lstmcpp.LSTM` and :class:`lstmcpp.QuantizedLSTM`.
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Tuple

import numpy as np

from ._args import as_real_array, check_int, shape_text

__all__ = ["Stream", "StreamPool"]


def _refuse_bidirectional(model: Any) -> None:
    if model.bidirectional or getattr(model, "reverse", False):
        kind = "bidirectional" if model.bidirectional else "reverse"
        raise ValueError(f"a {kind} model cannot stream: its reverse direction reads the sequence from its end")


class Stream:
    """One sequence (``batch=None``) or ``batch`` sequences in lockstep, advanced one step per
    :meth:`step`; equal to running the whole sequence at once. Belongs to one thread at a time."""

    def __init__(self, model: Any, batch: Optional[int] = None):
        _refuse_bidirectional(model)
        self._model = model
        self._unbatched = batch is None
        self._batch = 1 if batch is None else check_int("batch", batch, 1)
        L, B = model.num_layers, self._batch
        self._x_shape = (model.input_size,) if self._unbatched else (B, model.input_size)
        self._y_shape = (model.output_size,) if self._unbatched else (B, model.output_size)
        # the state, advanced in place by each step: (L, B, P) and (L, B, H), or (L, P) and (L, H)
        # for one unbatched sequence (the core tells the two apart by it)
        self._h = np.zeros((L, model.output_size) if self._unbatched else (L, B, model.output_size), model.dtype)
        self._c = np.zeros((L, model.hidden_size) if self._unbatched else (L, B, model.hidden_size), model.dtype)
        self._step_in_place = model._stepper()  # (bound once: a step's Python costs about 0.1 us of its 0.65 at H = 8)

    def step(self, x_t: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Advance by one step: ``x_t`` is ``(I,)`` (``(B, I)`` for a batch); returns ``y_t``
        ``(P,)`` (``(B, P)``), written into ``out`` when given. Bad input changes no state."""
        if out is not None:
            try:  # the lean path: the core checks types, shapes, dtypes, layouts and writeability before it steps
                self._step_in_place(x_t, self._h, self._c, out)
                return out
            except (TypeError, ValueError):
                pass  # converted, copied or refused by name below (the state is untouched)
        m = self._model
        a = x_t
        if not (type(a) is np.ndarray and a.dtype == m.dtype and a.flags.c_contiguous):
            a = np.ascontiguousarray(as_real_array(x_t, "x_t", m.dtype))
        if a.shape != self._x_shape:
            raise ValueError(f"x_t: expected shape {shape_text(self._x_shape)}, got {shape_text(a.shape)}")
        if out is None:
            target = np.empty(self._y_shape, m.dtype)
        elif type(out) is np.ndarray and out.shape == self._y_shape and out.dtype == m.dtype and out.flags.writeable:
            target = out if out.flags.c_contiguous else np.empty(self._y_shape, m.dtype)  # strided: copied into after
        else:
            raise ValueError(f"out: expected a writeable {m.dtype} array of shape {shape_text(self._y_shape)}, got "
                             f"{getattr(out, 'dtype', type(out).__name__)} {shape_text(np.shape(out))}")
        m._step(a, self._h, self._c, target)  # the core checks the rest before touching the state
        if out is not None and target is not out:
            out[...] = target
        return out if out is not None else target

    @property
    def state(self) -> Tuple[np.ndarray, np.ndarray]:
        """Copies of ``(h (L,P), c (L,H))``, or ``(L,B,P)``, ``(L,B,H)`` for a batch."""
        return self._h.copy(), self._c.copy()

    def reset(self, state: Optional[Tuple[Any, Any]] = None) -> None:
        """Start a new sequence: from zeros, or from ``state`` (shaped as :attr:`state`)."""
        if state is None:
            self._h[...] = 0
            self._c[...] = 0
            return
        h, c = self._model._state(state, self._batch, self._unbatched)
        if self._unbatched:
            h, c = h[:, 0], c[:, 0]
        self._h, self._c = np.array(h, order="C", copy=True), np.array(c, order="C", copy=True)


class StreamPool:
    """``capacity`` independent sequences, all starting from zeros; :meth:`step` advances the
    listed ones in one batched step (their states gathered, stepped, scattered back). Calls from
    several threads are serialised."""

    def __init__(self, model: Any, capacity: int):
        _refuse_bidirectional(model)
        self._model = model
        self.capacity = check_int("capacity", capacity, 1)
        L = model.num_layers
        self._h = np.zeros((L, self.capacity, model.output_size), model.dtype)
        self._c = np.zeros((L, self.capacity, model.hidden_size), model.dtype)
        self._lock = threading.Lock()

    def _ids(self, ids: Any, in_core: bool = False) -> np.ndarray:
        """ids as int64, checked; ``in_core``: the range and repeats are left to the core's step,
        which checks them before it touches a state (a pool of 256 saves 20 us a step)."""
        a = np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise TypeError(f"ids: expected integers, got dtype {a.dtype}")
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"ids: expected a 1-D array of at least one id, got shape {shape_text(a.shape)}")
        if in_core:
            if a.dtype == np.uint64 and a.max() > np.iinfo(np.int64).max:  # would wrap to a negative int64
                raise ValueError(f"ids: every id must be in 0..{self.capacity - 1}, got {a.max()}")
            return np.ascontiguousarray(a, np.int64)
        if a.min() < 0 or a.max() >= self.capacity:
            raise ValueError(f"ids: every id must be in 0..{self.capacity - 1}, got min {a.min()} and max {a.max()}")
        if np.unique(a).size != a.size:
            raise ValueError("ids: each id at most once a step (a stream advances by one step)")
        return a.astype(np.int64)

    def step(self, ids: Any, x: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Advance streams ``ids`` ``(n,)`` by one step with inputs ``x`` ``(n, I)``; returns
        ``y`` ``(n, P)``, written into ``out`` when given (a C-contiguous, writeable array of
        the model's dtype: then the step allocates nothing). Bad input changes no state."""
        m = self._model
        idx = self._ids(ids, in_core=True)
        a = x
        if not (type(a) is np.ndarray and a.dtype == m.dtype and a.flags.c_contiguous):
            a = np.ascontiguousarray(as_real_array(x, "x", m.dtype))
        if a.shape != (idx.size, m.input_size):
            raise ValueError(f"x: expected shape {shape_text((idx.size, m.input_size))}, got {shape_text(a.shape)}")
        y_shape = (idx.size, m.output_size)
        if out is None:
            y = np.empty(y_shape, m.dtype)
        elif (type(out) is np.ndarray and out.shape == y_shape and out.dtype == m.dtype and out.flags.c_contiguous
              and out.flags.writeable):
            y = out
        else:
            raise ValueError(f"out: expected a writeable, C-contiguous {m.dtype} array of shape {shape_text(y_shape)}, "
                             f"got {getattr(out, 'dtype', type(out).__name__)} {shape_text(np.shape(out))}")
        with self._lock:  # the core gathers the states, steps them as one batch, scatters them back
            m._pool_step(idx, a, self._h, self._c, y)
        return y

    def reset(self, ids: Any = None) -> None:
        """Zero the states of ``ids`` (every stream's when None)."""
        with self._lock:
            if ids is None:
                self._h[...] = 0
                self._c[...] = 0
            else:
                idx = self._ids(ids)
                self._h[:, idx] = 0
                self._c[:, idx] = 0

    def state(self, ids: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Copies of the states of ``ids``: ``(h (L,n,P), c (L,n,H))``."""
        idx = self._ids(ids)
        with self._lock:
            return self._h[:, idx].copy(), self._c[:, idx].copy()
