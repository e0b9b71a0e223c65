"""One rank of the data-parallel tests: tests/test_distributed.py starts one process per rank, with
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set as torchrun sets them.

    python tests/distributed_ranks.py SCENARIO OUT_DIR [gloo|mpi]

(under mpiexec for mpi).
"""

import json
import os
import sys

import numpy as np

import lstmcpp
from lstmcpp import distributed, optim
from lstmcpp.models import CharLM

VOCAB = "abcdefgh"
BATCH, SEQ_LEN, LR = 4, 6, 0.5


def make_model(seed):
    return CharLM(VOCAB, embedding_dim=5, hidden_size=7, dtype="float64", seed=seed)


def full_batches(steps, seed=0):
    """``steps`` batches (x (4,6), y (4,6)) of character ids."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, len(VOCAB), (BATCH, SEQ_LEN)).astype(np.int32),
             rng.integers(0, len(VOCAB), (BATCH, SEQ_LEN)).astype(np.int32)) for _ in range(steps)]


def shard(batches, rank, world):
    """Rank ``rank``'s rows of every batch: its own streams, whose carried state is its own."""
    rows = BATCH // world
    return [(x[rank * rows : (rank + 1) * rows], y[rank * rows : (rank + 1) * rows]) for x, y in batches]


STEPS = {"equal": (3, 3), "unequal": (2, 4)}  # batches on rank 0 and rank 1


def main(scenario, out, backend="gloo"):
    comm = distributed.init(backend, timeout=60) if backend == "gloo" else distributed.init(backend)
    rank, world = comm.rank, comm.world_size
    model = make_model(seed=rank)  # different on every rank: the broadcast must make them one
    history = None
    if scenario in STEPS:
        mine = shard(full_batches(max(STEPS[scenario])), rank, world)[: STEPS[scenario][rank]]
        history = lstmcpp.fit(model, mine, epochs=2, optimizer=optim.SGD(model, lr=LR), communicator=comm,
                              progress=False, log=None)
    elif scenario == "decisions":
        # rank 0 alone validates, checkpoints and runs out of time (budget 0: after its first step)
        mine = shard(full_batches(4), rank, world)
        history = lstmcpp.fit(model, mine, epochs=5, optimizer=optim.SGD(model, lr=LR), communicator=comm,
                              val_data=shard(full_batches(2, seed=1), 0, 1) if rank == 0 else None,
                              checkpoint=os.path.join(out, f"checkpoint{rank}.npz"),
                              time_budget=0.0 if rank == 0 else None, progress=False, log=None)
    elif scenario == "dies":
        class Dying(CharLM):
            def train_step(self, batch):
                if rank == 1 and self.calls == 2:
                    os._exit(3)  # this rank's process is gone, mid-epoch
                self.calls += 1
                return super().train_step(batch)

        model = Dying(VOCAB, embedding_dim=5, hidden_size=7, dtype="float64", seed=0)
        model.calls = 0
        try:
            lstmcpp.fit(model, shard(full_batches(50), rank, world), epochs=100, optimizer=optim.SGD(model, lr=LR),
                        communicator=comm, progress=False, log=None)
        except Exception as e:  # what the survivor sees
            with open(os.path.join(out, f"error{rank}.txt"), "w") as f:
                f.write(f"{type(e).__name__}: {e}")
            sys.exit(1)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    np.savez(os.path.join(out, f"rank{rank}.npz"), **{name: p for name, p in model.named_parameters()})
    with open(os.path.join(out, f"history{rank}.json"), "w") as f:
        json.dump({"steps": history.steps, "train_loss": history.train_loss, "val_loss": history.val_loss,
                   "stopped": history.stopped}, f)
    comm.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
