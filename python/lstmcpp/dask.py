"""lstmcpp on a Dask cluster: inference over Dask arrays and bags, and data-parallel training with
one task per worker and a gloo group among them (the pattern of LightGBM and XGBoost on Dask).
Needs ``pip install "lstmcpp[dask]"``; training also needs PyTorch for gloo (its CPU wheel).

>>> from distributed import Client
>>> client = Client("tcp://scheduler:8786")                   # or Client() for a local cluster
>>> y = lstmcpp.dask.predict(model, X)                          # X: (N, T, I) chunked along N
>>> trained, history = lstmcpp.dask.fit(model, batches, epochs=3)   # batches: a dask.bag.Bag

The model travels once to each worker, as the bytes of lstmcpp's own file format (parameters
only). Each task's lstmcpp threads follow the worker's: a worker with ``nthreads`` threads gives
a lone task all of them and splits them among the tasks it runs at once.

``dask.dataframe``: cut each partition's rows into windows, then predict on the windows::

    from numpy.lib.stride_tricks import sliding_window_view

    def windows(part, window=24):                                   # rows -> (n, window, 2)
        values = part[["temp", "wind"]].to_numpy(np.float32)
        return sliding_window_view(values, (window, 2))[:, 0]

    X = df.map_partitions(windows, meta=np.empty((0, 24, 2), np.float32))   # a Dask array
    y = lstmcpp.dask.predict(model, X)                              # (n windows, 24, D*P)

(windows do not cross partitions: give each partition ``window - 1`` rows of overlap, with
``dask.dataframe``'s ``map_overlap``, if they must.) ``tests/test_dask.py`` runs this recipe.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    import dask.array as da
    import dask.bag as db
    import distributed
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError(f"lstmcpp.dask needs dask and distributed ({e}): pip install \"lstmcpp[dask]\" "
                      "(or pip install \"dask[array,bag]\" distributed)") from None

from . import io as _io
from . import optim as _optim
from ._lstm import LSTM
from .quantize import QuantizedLSTM
from .train import History, fit as _fit

__all__ = ["predict", "predict_files", "fit"]


def _client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        return distributed.default_client()
    except ValueError:
        raise ValueError("client: no Dask client is running; pass client= or create one first "
                         "(distributed.Client() for a local cluster, Client('tcp://host:8786') for a real one)") from None


class _Shipped:
    """A model that pickles as the native format's bytes (no gradients, no Python code), so each
    worker receives it compactly and rebuilds it once."""

    def __init__(self, model: Any, data: Optional[bytes] = None):
        self.model, self._data = model, data  # data: the model's bytes when already made

    def __reduce__(self):
        return (_unship, (self._data if self._data is not None else _io.dumps(self.model),))


_models_received = 0  # in this process: how many times a model arrived (once per worker per call)


def _unship(data: bytes) -> _Shipped:
    global _models_received
    _models_received += 1
    return _Shipped(_io.loads(data))


_running_lock = threading.Lock()
_running = 0  # lstmcpp tasks running now in this worker process


@contextlib.contextmanager
def _worker_threads():
    """lstmcpp's threads follow the worker's: the worker's ``nthreads`` split among the lstmcpp
    tasks running in it as each starts (outside a worker: unchanged). The count is one for the
    whole process, so a task already running follows it too."""
    global _running
    try:
        worker = distributed.get_worker()
    except ValueError:
        yield
        return
    from . import set_num_threads

    with _running_lock:
        _running += 1
        set_num_threads(max(1, int(worker.state.nthreads) // _running))
    try:
        yield
    finally:
        with _running_lock:
            _running -= 1


def _check_model(model: Any) -> None:
    if not isinstance(model, (LSTM, QuantizedLSTM)):
        raise TypeError(f"model: expected an lstmcpp.LSTM or a quantized model, got {type(model).__name__}")


def _run_block(model: Any, x: np.ndarray, lengths: Optional[np.ndarray]) -> np.ndarray:
    """(n, T, I) -> (n, T, D*P) whatever the model's ``batch_first``."""
    dtype = np.dtype(getattr(model, "dtype", np.float32))
    x = np.asarray(x, dtype)
    with _worker_threads():
        if model.batch_first:
            y, _ = model(x, lengths=lengths)
            return y
        y, _ = model(np.ascontiguousarray(x.transpose(1, 0, 2)), lengths=lengths)
        return np.ascontiguousarray(y.transpose(1, 0, 2))


def _predict_block(x: np.ndarray, shipped: _Shipped) -> np.ndarray:
    return _run_block(shipped.model, x, None)


def _predict_block_lengths(x: np.ndarray, lengths: np.ndarray, shipped: _Shipped) -> np.ndarray:
    return _run_block(shipped.model, x, lengths.reshape(-1))


def predict(model: Any, X: Any, *, lengths: Any = None, client: Any = None) -> Any:
    """``model``'s output for every sequence of ``X``, computed on the cluster.

    Parameters
    ----------
    model : an :class:`lstmcpp.LSTM` or a quantized model (:func:`lstmcpp.quantize`).
    X : a Dask array ``(N, T, I)`` chunked along N only (whole sequences in each chunk), whatever
        the model's ``batch_first``.
    lengths : optional ``(N,)`` valid steps per sequence (a NumPy or Dask array).
    client : a ``distributed.Client``; defaults to the current one.

    Returns a lazy Dask array ``(N, T, D*P)`` chunked as ``X`` along N (``.compute()`` it).
    """
    _check_model(model)
    if not isinstance(X, da.Array):
        raise TypeError(f"X: expected a dask array (N, T, I), got {type(X).__name__}; for NumPy input call the model itself")
    if X.ndim != 3:
        raise ValueError(f"X: expected a dask array (N, T, I), got shape {X.shape}")
    if X.shape[2] != model.input_size:
        raise ValueError(f"X: expected (N, T, {model.input_size}) for this model's input size, got {X.shape}")
    if len(X.chunks[1]) != 1 or len(X.chunks[2]) != 1:
        raise ValueError(f"X: chunked along T or I (chunks {tuple(map(len, X.chunks))} along N, T, I); each chunk must "
                         "hold whole sequences: X = X.rechunk({1: -1, 2: -1})")
    client = _client(client)
    shipped = client.scatter(_Shipped(model), hash=False, broadcast=True)
    out_dtype = np.dtype(getattr(model, "dtype", np.float32))
    chunks = (X.chunks[0], (X.shape[1],), (model.output_size,))
    if lengths is None:
        return X.map_blocks(_predict_block, shipped, dtype=out_dtype, chunks=chunks, name=f"lstmcpp-predict-{uuid.uuid4().hex}")
    lengths = da.asarray(lengths)
    if lengths.shape != (X.shape[0],):
        raise ValueError(f"lengths: expected shape ({X.shape[0]},), one per sequence of X, got {lengths.shape}")
    lengths = lengths.rechunk((X.chunks[0],))[:, None, None]
    return da.map_blocks(_predict_block_lengths, X, lengths, shipped, dtype=out_dtype, chunks=chunks,
                         name=f"lstmcpp-predict-{uuid.uuid4().hex}")


def _predict_file(path: Any, load: Callable[[Any], Any], shipped: _Shipped) -> np.ndarray:
    model = shipped.model
    with _worker_threads():
        y, _ = model(load(path))
    return y


def predict_files(model: Any, paths: Sequence[Any], load: Callable[[Any], Any], *, client: Any = None) -> Any:
    """``model(load(path))``'s output for each path, one path per task, as a lazy ``dask.bag.Bag``
    (in the order of ``paths``). ``load`` runs on the workers: it must read what they can reach
    and return what the model takes (``(T, I)``, or ``(T, B, I)`` / ``(B, T, I)`` by its ``batch_first``)."""
    _check_model(model)
    paths = list(paths)
    if not paths:
        raise ValueError("paths: expected at least one path")
    if not callable(load):
        raise TypeError(f"load: expected a function path -> array, got {type(load).__name__}")
    client = _client(client)
    shipped = client.scatter(_Shipped(model), hash=False, broadcast=True)
    return db.from_sequence(paths, npartitions=len(paths)).map(_predict_file, load, shipped)


# ------------------------------------------------------------------------------------------------
# training: one task per worker holding data, a gloo group among them


_OPTIMIZERS = {"sgd": _optim.SGD, "adam": _optim.Adam, "adamw": _optim.AdamW}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _train_rank(shipped: _Shipped, parts: List[List[Any]], rank: int, world: int, address: str, port: int,
                optimizer: Tuple[str, Dict[str, Any]], epochs: int, options: Dict[str, Any], timeout: float):
    """One worker's task: join the gloo group, train on this worker's partitions, return rank 0's
    model (as bytes) and every rank's parameter checksum."""
    from . import distributed as collective

    model = shipped.model  # this worker's copy, scattered for this call alone: trained in place
    name, kwargs = optimizer
    items = [item for part in parts for item in part]
    options = dict(options)
    schedule = options.pop("schedule", None)
    with _worker_threads(), collective.init("gloo", rank=rank, world_size=world, master_addr=address,
                                            master_port=port, timeout=timeout) as comm:
        opt = _OPTIMIZERS[name](model, **kwargs)
        history = _fit(model, items, epochs=epochs, optimizer=opt, schedule=schedule(opt) if schedule else None,
                       communicator=comm, **options)
    checksum = _io.checksum(dict(model.named_parameters()))
    return (_io.dumps(model) if rank == 0 else None), history, checksum


def _partitions_by_worker(client: Any, bag: Any) -> Dict[str, List[Any]]:
    """Persist ``bag`` and share its partitions' futures among the workers: each stays with the
    worker that holds it, except that shares are evened out (to within one partition) over
    min(workers, partitions) workers, moving as few as it takes. Each share keeps the bag's order."""
    persisted = client.persist(bag)
    futures = {f.key: f for f in distributed.futures_of(persisted)}
    ordered = [futures[key] for key in persisted.__dask_keys__()]
    distributed.wait(ordered)
    who_has = client.who_has(ordered)
    workers = sorted(client.nthreads())
    shares: Dict[str, List[int]] = {w: [] for w in workers}
    for index, f in enumerate(ordered):
        holders = sorted(w for w in who_has[f.key] if w in shares)
        shares[holders[0] if holders else workers[0]].append(index)
    ranks = sorted(workers, key=lambda w: -len(shares[w]))[: min(len(workers), len(ordered))]
    moving = [i for w in workers if w not in ranks for i in shares.pop(w)]
    while True:  # from the largest share to the smallest until they differ by one at most
        big, small = max(ranks, key=lambda w: len(shares[w])), min(ranks, key=lambda w: len(shares[w]))
        if moving:
            shares[small].append(moving.pop())
        elif len(shares[big]) - len(shares[small]) > 1:
            shares[small].append(shares[big].pop())
        else:
            break
    return {w: [ordered[i] for i in sorted(shares[w])] for w in sorted(ranks)}


def fit(model: Any, batches: Any, *, client: Any = None, epochs: int = 1,
        optimizer: Tuple[str, Dict[str, Any]] = ("adam", {"lr": 1e-3}), timeout: float = 300.0,
        **fit_options: Any) -> Tuple[Any, History]:
    """Train ``model`` data-parallel on the cluster; returns ``(trained_model, history)``.

    Parameters
    ----------
    model : anything :func:`lstmcpp.fit` trains and :func:`lstmcpp.save` writes (an ``LSTM``,
        a ``CharLM``, ``Forecaster`` or ``AttentionClassifier``). It is not changed: the trained
        model is a new one, rank 0's.
    batches : a ``dask.bag.Bag`` whose items are what ``model.train_step`` takes. Its partitions
        are shared among min(workers, partitions) workers, each keeping those it computed where
        the shares stay within one partition of each other; each of these workers runs one task
        (a rank) on its share, in order, each epoch. Partitions of equal sizes keep the ranks in
        step; otherwise see :mod:`lstmcpp.distributed` on unequal shards.
    epochs : passes over each rank's batches.
    optimizer : ``(name, kwargs)``, name ``"sgd"``, ``"adam"`` or ``"adamw"``: built on each worker.
    timeout : seconds a rank waits in a collective before it gives up.
    fit_options : passed to :func:`lstmcpp.fit` on every rank (``clip_norm``, ``val_data`` (used
        by rank 0), ``patience``, ``time_budget``, ``checkpoint`` (written by rank 0's worker),
        ``progress``, ``log``); ``schedule`` is a function of the optimizer returning one
        (``lambda opt: lstmcpp.optim.CosineWithWarmup(opt, 100, 10_000)``).

    A worker lost during training (or a rank that fails) raises ``RuntimeError`` here, naming
    it; the other ranks stop at their next collective.
    """
    if not isinstance(batches, db.Bag):
        raise TypeError(f"batches: expected a dask.bag.Bag of what model.train_step takes, got {type(batches).__name__}")
    if not (isinstance(optimizer, tuple) and len(optimizer) == 2 and optimizer[0] in _OPTIMIZERS
            and isinstance(optimizer[1], dict)):
        raise ValueError(f"optimizer: expected (name, kwargs) with name one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    if "communicator" in fit_options:
        raise TypeError("communicator: lstmcpp.dask.fit makes one for each rank")
    if "schedule" in fit_options and fit_options["schedule"] is not None and not callable(fit_options["schedule"]):
        raise TypeError("schedule: expected a function of the optimizer that returns a schedule")
    data = _io.dumps(model)  # refuses what cannot travel, before anything runs; shipped below as it is
    fit_options.setdefault("progress", False)
    fit_options.setdefault("log", None)
    client = _client(client)
    by_worker = _partitions_by_worker(client, batches)
    workers = sorted(by_worker)
    address = distributed.comm.get_address_host(workers[0])
    port = client.run(_free_port, workers=[workers[0]])[workers[0]]
    shipped = client.scatter(_Shipped(model, data), hash=False, broadcast=True)
    run = uuid.uuid4().hex[:8]
    # rank 0 alone validates: the others need no validation data
    options = [dict(fit_options, val_data=fit_options.get("val_data") if rank == 0 else None) for rank in range(len(workers))]
    futures = [client.submit(_train_rank, shipped, by_worker[w], rank, len(workers), address, port, optimizer, epochs,
                             options[rank], timeout, workers=[w], allow_other_workers=False, pure=False, retries=0,
                             key=f"lstmcpp-fit-{run}-rank{rank}")
               for rank, w in enumerate(workers)]
    try:
        _wait_for_ranks(client, futures, workers)
        results = client.gather(futures)
    except BaseException:
        client.cancel(futures + [shipped])
        raise
    checksums = {checksum for _, _, checksum in results}
    if len(checksums) != 1:
        raise RuntimeError(f"the {len(workers)} ranks ended with different parameters; please report this")
    blob, history, _ = results[0]
    return _io.loads(blob), history


def _wait_for_ranks(client: Any, futures: List[Any], workers: List[str], poll: float = 1.0) -> None:
    """Until every rank is done: raise as soon as one fails or its worker leaves the cluster."""
    while True:
        pending = [f for f in futures if f.status != "finished"]
        if pending:
            try:
                distributed.wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
            except distributed.TimeoutError:
                pass
        for rank, f in enumerate(futures):
            if f.status == "error":
                error = f.exception()
                raise RuntimeError(f"lstmcpp.dask.fit: rank {rank} (worker {workers[rank]}) failed: "
                                   f"{type(error).__name__}: {error}") from error
        if all(f.status == "finished" for f in futures):
            return
        alive = set(client.nthreads())
        for rank, w in enumerate(workers):
            if w not in alive and futures[rank].status != "finished":
                raise RuntimeError(f"lstmcpp.dask.fit: worker {w} (rank {rank}) left the cluster during training")
