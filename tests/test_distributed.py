"""Data-parallel training over gloo: two local processes on 127.0.0.1, started as torchrun would
(tests/distributed_ranks.py is one rank), against one process on the batches put together."""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import lstmcpp
from lstmcpp import distributed, optim

pytest.importorskip("torch.distributed")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import distributed_ranks as ranks  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def mpi_available():
    return importlib.util.find_spec("mpi4py") is not None and os.path.exists(MPIEXEC)


BACKENDS = ["gloo", pytest.param("mpi", marks=pytest.mark.skipif(not mpi_available(), reason="needs mpi4py and an "
                                                                  "mpiexec beside Python: pip install mpi4py mpich"))]


def run_ranks(scenario, out, world=2, timeout=120, backend="gloo"):
    """Start ``world`` ranks of ``scenario``; their exit codes (a hang fails the test at ``timeout``).
    Under MPI, mpiexec's one exit code."""
    if backend == "mpi":
        p = subprocess.run([MPIEXEC, "-n", str(world), sys.executable, os.path.join(HERE, "distributed_ranks.py"),
                            scenario, str(out), "mpi"], env=dict(os.environ, OMP_NUM_THREADS="1"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if scenario != "dies" and p.returncode != 0:
            print(p.stdout)
        return [p.returncode]
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "distributed_ranks.py"), scenario, str(out)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    codes = []
    try:
        for p in procs:
            output, _ = p.communicate(timeout=timeout)
            codes.append(p.returncode)
            if p.returncode not in (0, 1, 3):
                print(output)
    finally:
        for p in procs:
            p.kill()
    return codes


def parameters(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def worst_relative_error(got, expected):
    """The largest error of any parameter, relative to that parameter's largest value."""
    return max(np.abs(got[k] - expected[k]).max() / np.abs(expected[k]).max() for k in expected)


def history(out, rank):
    with open(os.path.join(out, f"history{rank}.json")) as f:
        return json.load(f)


def one_process(per_rank, epochs=2):
    """One process taking the steps the ranks take together: at each step, the mean of the
    gradients of the ranks that still have a batch (each rank's carried state its own)."""
    model = ranks.make_model(seed=0)
    sgd = optim.SGD(model, lr=ranks.LR)
    for _ in range(epochs):
        states = [None] * len(per_rank)
        for step in range(max(map(len, per_rank))):
            sgd.zero_grad()
            active = [r for r, batches in enumerate(per_rank) if step < len(batches)]
            for r in active:
                model._state = states[r]
                model.train_step(per_rank[r][step])
                states[r] = model._state
            for g in sgd.grads:
                g /= len(active)
            sgd.step()
    return dict(model.named_parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path, backend):
    assert set(run_ranks("equal", tmp_path, backend=backend)) == {0}
    batches = ranks.full_batches(3)
    single = ranks.make_model(seed=0)
    lstmcpp.fit(single, batches, epochs=2, optimizer=optim.SGD(single, lr=ranks.LR), progress=False, log=None)
    expected = dict(single.named_parameters())
    initial = dict(ranks.make_model(seed=0).named_parameters())
    assert np.abs(expected["lstm.weight_hh_l0"] - initial["lstm.weight_hh_l0"]).max() > 1e-3  # it trained
    for rank in (0, 1):
        got = parameters(tmp_path / f"rank{rank}.npz")
        assert worst_relative_error(got, expected) < 1e-10, (rank, worst_relative_error(got, expected))
    # the history is the whole batch's on every rank
    assert history(tmp_path, 0) == history(tmp_path, 1)
    assert history(tmp_path, 0)["steps"] == 6


def test_the_broadcast_makes_the_ranks_start_alike(tmp_path):
    # ranks build their models from different seeds; without the broadcast they would end apart
    assert run_ranks("equal", tmp_path) == [0, 0]
    zero, one = parameters(tmp_path / "rank0.npz"), parameters(tmp_path / "rank1.npz")
    assert all(np.array_equal(zero[k], one[k]) for k in zero)
    started_apart = dict(ranks.make_model(seed=1).named_parameters())
    assert not np.allclose(started_apart["lstm.weight_ih_l0"], dict(ranks.make_model(seed=0).named_parameters())["lstm.weight_ih_l0"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_unequal_shards_do_not_hang_and_average_over_the_ranks_with_a_batch(tmp_path, backend):
    assert set(run_ranks("unequal", tmp_path, backend=backend)) == {0}
    full = ranks.full_batches(4)
    per_rank = [ranks.shard(full, 0, 2)[:2], ranks.shard(full, 1, 2)[:4]]
    expected = one_process(per_rank)
    for rank in (0, 1):
        got = parameters(tmp_path / f"rank{rank}.npz")
        assert worst_relative_error(got, expected) < 1e-10, (rank, worst_relative_error(got, expected))
        assert history(tmp_path, rank)["steps"] == 8  # the longer shard's 4 steps, twice


def test_rank_zero_decides_for_every_rank(tmp_path):
    assert run_ranks("decisions", tmp_path) == [0, 0]
    zero, one = history(tmp_path, 0), history(tmp_path, 1)
    assert zero == one  # rank 1 has no validation data, no clock: it learns rank 0's
    assert zero["steps"] == 1 and zero["stopped"] == "time budget" and len(zero["val_loss"]) == 1
    assert (tmp_path / "checkpoint0.npz").exists() and not (tmp_path / "checkpoint1.npz").exists()


@pytest.mark.skipif(not mpi_available(), reason="needs mpi4py and an mpiexec beside Python: pip install mpi4py mpich")
def test_a_rank_that_dies_under_mpi_ends_the_job(tmp_path):
    # MPI's launcher takes the whole job down with a lost rank: no survivor waits
    assert run_ranks("dies", tmp_path, backend="mpi", timeout=90) != [0]


def test_a_rank_that_dies_raises_on_the_others(tmp_path):
    codes = run_ranks("dies", tmp_path, timeout=90)
    assert codes == [1, 3]
    error = (tmp_path / "error0.txt").read_text()  # the survivor does not wait for the lost rank
    assert error.startswith("RuntimeError: rank 0 of 2: the all-reduce of the gradients failed, so another rank has "
                            "stopped or been lost"), error


def test_local_and_refusals(monkeypatch):
    comm = distributed.init("local")
    assert (comm.rank, comm.world_size) == (0, 1)
    model = ranks.make_model(seed=0)
    history = lstmcpp.fit(model, ranks.full_batches(2), optimizer=optim.SGD(model, lr=0.1), communicator=comm,
                          progress=False, log=None)
    assert history.steps == 2
    with pytest.raises(ValueError, match="backend"):
        distributed.init("nccl")
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="RANK is not set; launch with torchrun"):
        distributed.init("gloo")
    with pytest.raises(ValueError, match="rank: expected 0 <= rank < world_size = 2, got 2"):
        distributed.init("gloo", rank=2, world_size=2, master_addr="127.0.0.1", master_port=1)
