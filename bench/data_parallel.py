"""Data-parallel training of the demo's CharLM: what one step computes, what its all-reduce costs,
and where adding workers stops paying. ``python bench/data_parallel.py`` (needs torch for gloo,
and dask + distributed for the local-cluster run).

1. compute: one training step (forward + backward, batch 32 x 100) in one process;
2. communication: gloo's all-reduce of the step's flat buffer between 2 processes on 127.0.0.1;
3. end to end: lstmcpp.fit in one process against lstmcpp.dask.fit on a LocalCluster of 2
   one-thread workers (each rank 32 streams, so a step sees 64), seconds per step;
4. on paper: a ring all-reduce moves 2 (p-1)/p of the buffer through each worker's link and
   takes 2 (p-1) latency hops, so on a 10 Gb/s network with 50 us per hop, against the measured
   compute per step, at 2, 8 and 64 workers.
"""

import multiprocessing as mp
import os
import socket
import statistics
import sys
import time

import numpy as np

import lstmcpp
from lstmcpp.bench import machine_description
from lstmcpp.models import CharLM
from lstmcpp.tasks import stdlib_text

BATCH, SEQ_LEN = 32, 100


def demo_model(text):
    return CharLM.from_text(text, embedding_dim=64, hidden_size=256, seed=0)


def step_seconds(lm, batches, repeats=20):
    times = []
    lm.reset_state()
    for k in range(repeats):
        lm.zero_grad()
        start = time.perf_counter()
        lm.train_step(batches[k % len(batches)])
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def _allreduce_rank(rank, world, port, size, repeats, out):
    os.environ.update(OMP_NUM_THREADS="1")
    from lstmcpp import distributed

    comm = distributed.init("gloo", rank=rank, world_size=world, master_addr="127.0.0.1", master_port=port)
    buffer = np.ones(size, np.float32)
    times = []
    for _ in range(repeats):
        comm.barrier()
        start = time.perf_counter()
        comm.allreduce_sum(buffer)
        times.append(time.perf_counter() - start)
    if rank == 0:
        out.put(statistics.median(times[5:]))
    comm.close()


def allreduce_seconds(size, repeats=60):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    out = context.Queue()
    ranks = [context.Process(target=_allreduce_rank, args=(r, 2, port, size, repeats, out)) for r in range(2)]
    for p in ranks:
        p.start()
    result = out.get(timeout=120)
    for p in ranks:
        p.join()
    return result


def end_to_end(lm, ids, seconds=20.0):
    """Seconds per step: lstmcpp.fit here (all cores) and lstmcpp.dask.fit on 2 local workers."""
    import dask
    import dask.bag as db
    from distributed import Client, LocalCluster

    import lstmcpp.dask
    from lstmcpp.tasks import _shard_batches

    half = len(ids) // 2
    single = CharLM.from_text(lm.vocab, embedding_dim=64, hidden_size=256, seed=0)
    h1 = lstmcpp.fit(single, _shard_batches(ids[:half], BATCH, SEQ_LEN, 0), epochs=100, time_budget=seconds,
                     progress=False, log=None)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        bag = db.from_delayed([dask.delayed(_shard_batches)(ids[r * half : (r + 1) * half], BATCH, SEQ_LEN, r)
                               for r in range(2)])
        start = time.perf_counter()
        _, h2 = lstmcpp.dask.fit(lm, bag, client=client, epochs=100, time_budget=seconds)
        total = time.perf_counter() - start
    return h1.seconds / h1.steps, h2.seconds / h2.steps, total - h2.seconds


def main():
    text = stdlib_text(2_000_000)
    lm = demo_model(text)
    ids = lm.encode(text)
    batches = list(lm.batches(ids, BATCH, SEQ_LEN, seed=0)())[:20]
    n = lm.num_parameters()
    size_bytes = 4 * (n + 4)
    print(f"CharLM of the demo: {n:,} parameters; the all-reduce buffer is {size_bytes / 1e6:.2f} MB (float32)")
    print(f"CPU: {machine_description()['cpu']}, {os.cpu_count()} logical cores")

    lstmcpp.set_num_threads(1)
    compute_1 = step_seconds(lm, batches)
    lstmcpp.set_num_threads(os.cpu_count() or 1)
    compute_all = step_seconds(lm, batches)
    print(f"one step (batch {BATCH} x {SEQ_LEN}, forward + backward): {compute_1 * 1e3:.1f} ms on 1 thread, "
          f"{compute_all * 1e3:.1f} ms on {os.cpu_count()}")

    reduce = allreduce_seconds(n + 4)
    print(f"gloo all-reduce of that buffer, 2 processes on 127.0.0.1: {reduce * 1e3:.2f} ms "
          f"({reduce / compute_1:.1%} of a one-thread step)")

    if "--no-cluster" not in sys.argv:
        single, parallel, startup = end_to_end(lm, ids)
        print(f"end to end, seconds per step: lstmcpp.fit in one process ({os.cpu_count()} threads, 32 streams) "
              f"{single * 1e3:.1f} ms; lstmcpp.dask.fit on 2 one-thread workers (2 x 32 streams) {parallel * 1e3:.1f} ms: "
              f"{2 * single / parallel:.2f}x the streams per second; start-up (cluster, scatter, gloo) {startup:.1f} s")

    print("\nOn paper: a ring all-reduce over p workers, 10 Gb/s links, 50 us per hop, against the one-thread step:")
    print("| workers | bytes through each link per step | all-reduce time | compute per step | efficiency |")
    print("|---|---|---|---|---|")
    for p in (2, 8, 64):
        moved = 2 * (p - 1) / p * size_bytes
        seconds = moved / 1.25e9 + 2 * (p - 1) * 50e-6
        print(f"| {p} | {moved / 1e6:.2f} MB | {seconds * 1e3:.2f} ms | {compute_1 * 1e3:.0f} ms | "
              f"{compute_1 / (compute_1 + seconds):.0%} |")



if __name__ == "__main__":
    main()
