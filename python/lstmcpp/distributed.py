"""Data-parallel training over a collective library that already exists: PyTorch's gloo backend
on the CPU, or MPI through mpi4py. lstmcpp opens no sockets of its own.

>>> comm = lstmcpp.distributed.init("gloo")     # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
>>> history = lstmcpp.fit(model, my_shard, optimizer=optim.SGD(model, lr=0.1), communicator=comm)

Launch one process per rank as ``torchrun`` does (``torchrun --nproc-per-node 2 train.py``, or
``--nnodes`` across machines), or with ``mpirun -n 2 python train.py`` for ``init("mpi")``.
:func:`lstmcpp.fit` then

- broadcasts every parameter from rank 0 before the first step, so the ranks start alike;
- after each rank's ``train_step``, copies its gradients into one flat buffer and runs **one**
  all-reduce per step; the same buffer carries the ranks' loss sums, item counts, whether each
  had a batch at all and rank 0's time-budget decision; every rank divides by the number of
  ranks that had a batch and takes the same optimizer step;
- shows progress, validates, stops early and writes checkpoints on rank 0 only, and broadcasts
  its decisions, so no rank is left waiting.

Shards of different lengths do not hang: a rank that has run out of batches keeps joining each
step's all-reduce with a zero gradient until every rank has, and the step's gradient is the mean
over the ranks that had a batch. The epoch therefore lasts as many steps as the longest shard.

With equal shards, the same batch size on every rank and a loss that is the mean over the batch
(every model in :mod:`lstmcpp.models`), 2 ranks take exactly the steps of one process on the
batches put together (``tests/test_distributed.py`` checks this to 1e-10 in float64).
"""

from __future__ import annotations

import atexit
import datetime
import os
from typing import Any, List, Optional, Sequence

import numpy as np

__all__ = ["Communicator", "init", "GradientSync"]


class Communicator:
    """What :func:`lstmcpp.fit` needs of a collective: sums and broadcasts of NumPy buffers, in
    place, across ``world_size`` processes. Subclass it to bring another library."""

    rank: int = 0
    world_size: int = 1
    backend: str = "local"

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Replace ``buffer`` (contiguous, float32 or float64) on every rank by the sum over ranks."""

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        """Replace ``buffer`` on every rank by rank ``root``'s."""

    def barrier(self) -> None:
        """Wait until every rank has arrived."""

    def close(self) -> None:
        """Leave the group (a closed communicator may not be used again)."""

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend}: rank {self.rank} of {self.world_size}>"


class _Gloo(Communicator):
    backend = "gloo"

    def __init__(self, torch: Any, group: Any, owns_group: bool):
        self._torch, self._dist, self._group, self._owns = torch, torch.distributed, group, owns_group
        self.rank = self._dist.get_rank(group)
        self.world_size = self._dist.get_world_size(group)

    def _tensor(self, buffer: np.ndarray) -> Any:
        if not (isinstance(buffer, np.ndarray) and buffer.flags.c_contiguous and buffer.flags.writeable):
            raise TypeError("buffer: expected a writeable C-contiguous NumPy array")
        return self._torch.from_numpy(buffer)  # shares buffer's memory: the collective writes into it

    def allreduce_sum(self, buffer):
        self._dist.all_reduce(self._tensor(buffer), op=self._dist.ReduceOp.SUM, group=self._group)

    def broadcast(self, buffer, root=0):
        self._dist.broadcast(self._tensor(buffer), src=root, group=self._group)

    def barrier(self):
        self._dist.barrier(group=self._group)

    def close(self):
        if self._owns and self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._owns = False


class _MPI(Communicator):
    backend = "mpi"

    def __init__(self, MPI: Any, comm: Any):
        self._MPI, self._comm = MPI, comm
        self.rank, self.world_size = comm.Get_rank(), comm.Get_size()

    def allreduce_sum(self, buffer):
        self._comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)

    def broadcast(self, buffer, root=0):
        self._comm.Bcast(buffer, root=root)

    def barrier(self):
        self._comm.Barrier()


def _environment(name: str, given: Any) -> str:
    if given is not None:
        return str(given)
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"init('gloo'): {name} is not set; launch with torchrun (which sets RANK, WORLD_SIZE, "
                         f"MASTER_ADDR and MASTER_PORT) or pass {name.lower()}=")
    return value


def init(backend: str = "gloo", *, rank: Optional[int] = None, world_size: Optional[int] = None,
         master_addr: Optional[str] = None, master_port: Optional[int] = None,
         timeout: float = 1800.0) -> Communicator:
    """Join the group of training processes.

    Parameters
    ----------
    backend : ``"gloo"`` (PyTorch's CPU collective; ``pip install torch``), ``"mpi"`` (mpi4py;
        ``pip install mpi4py``, run under ``mpirun``) or ``"local"`` (one process: world size 1).
    rank, world_size, master_addr, master_port : for gloo, default to the environment variables
        ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` that ``torchrun`` sets. If
        ``torch.distributed`` is already initialised (the script did it), its group is used.
    timeout : seconds a gloo collective may wait for the other ranks before it raises.
    """
    if backend == "local":
        return Communicator()
    if backend == "gloo":
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            raise ImportError("lstmcpp.distributed.init('gloo') needs PyTorch (its CPU wheel is enough): "
                              "pip install torch --index-url https://download.pytorch.org/whl/cpu") from None
        if dist.is_initialized():
            return _Gloo(torch, None, owns_group=False)
        rank_, world = int(_environment("RANK", rank)), int(_environment("WORLD_SIZE", world_size))
        if not 0 <= rank_ < world:
            raise ValueError(f"rank: expected 0 <= rank < world_size = {world}, got {rank_}")
        address = f"tcp://{_environment('MASTER_ADDR', master_addr)}:{int(_environment('MASTER_PORT', master_port))}"
        dist.init_process_group("gloo", init_method=address, rank=rank_, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        comm = _Gloo(torch, None, owns_group=True)
        # Destroyed while the interpreter still runs: left to its finalisation, a group whose
        # collective failed (another rank lost) ends the process with SIGABRT about one time in
        # four ("terminate called without an active exception"), after the error was reported.
        atexit.register(comm.close)
        return comm
    if backend == "mpi":
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError("lstmcpp.distributed.init('mpi') needs mpi4py: pip install mpi4py") from None
        return _MPI(MPI, MPI.COMM_WORLD)
    raise ValueError(f"backend: expected 'gloo', 'mpi' or 'local', got {backend!r}")


class GradientSync:
    """The per-step exchange :func:`lstmcpp.fit` makes with a communicator: one flat buffer
    ``(n + 4,)`` in the parameters' dtype, the gradients first, then four numbers summed over the
    ranks: had a batch (1 or 0), loss sum, item count, and stop (rank 0's time budget)."""

    def __init__(self, comm: Communicator, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]):
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise TypeError(f"model: data-parallel training needs one parameter dtype, got {sorted(map(str, dtypes))}")
        self.comm = comm
        self.params: List[np.ndarray] = list(params)
        self.grads: List[np.ndarray] = list(grads)
        self.dtype = dtypes.pop()
        self._sizes = [p.size for p in self.params]
        self._flat = np.empty(sum(self._sizes) + 4, self.dtype)

    def _pack(self, arrays: Sequence[np.ndarray]) -> None:
        at = 0
        for a, n in zip(arrays, self._sizes):
            self._flat[at : at + n] = a.reshape(-1)
            at += n

    def _unpack(self, arrays: Sequence[np.ndarray], scale: float = 1.0) -> None:
        at = 0
        for a, n in zip(arrays, self._sizes):
            chunk = self._flat[at : at + n].reshape(a.shape)
            if scale == 1.0:
                a[...] = chunk
            else:
                np.multiply(chunk, scale, out=a)
            at += n

    def _collective(self, run: Any, what: str) -> None:
        try:
            run()
        except Exception as e:  # gloo's "Connection reset by peer", MPI's errors, timeouts
            raise RuntimeError(f"rank {self.comm.rank} of {self.comm.world_size}: the {what} failed, so another rank has "
                               f"stopped or been lost ({type(e).__name__}: {e})") from e

    def broadcast_parameters(self) -> None:
        """Every rank's parameters become rank 0's."""
        self._pack(self.params)
        self._collective(lambda: self.comm.broadcast(self._flat[:-4], root=0), "broadcast of the parameters")
        self._unpack(self.params)

    def average_gradients(self, had_batch: bool, loss: float, count: int, stop: bool):
        """One all-reduce: every rank's gradients become the mean over the ranks that had a batch.
        Returns (ranks that had a batch, loss sum, item count, stop) summed over the ranks."""
        if had_batch:
            self._pack(self.grads)
        else:
            self._flat[:-4] = 0
        self._flat[-4:] = (float(had_batch), loss, count, float(stop))
        self._collective(lambda: self.comm.allreduce_sum(self._flat), "all-reduce of the gradients")
        active, loss_sum, items, stops = (float(v) for v in self._flat[-4:])
        if active > 0:
            self._unpack(self.grads, 1.0 / active)
        return int(round(active)), loss_sum, int(round(items)), stops > 0

    def decide(self, values: Sequence[float]) -> np.ndarray:
        """Rank 0's ``values`` on every rank (float64)."""
        buffer = np.array(values, np.float64)
        self._collective(lambda: self.comm.broadcast(buffer, root=0), "broadcast of rank 0's decisions")
        return buffer
