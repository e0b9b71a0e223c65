"""Time the core of two builds against each other, interleaved: for commits that must not slow
anything (a refactor). Each build runs in its own worker process (two pybind11 modules with the same
types cannot share one), with OMP_WAIT_POLICY=passive so the idle one's threads do not spin on the
cores the other needs; absolute times are higher than in the benchmark, the ratio is what counts.

    python tools/ab_core.py OLD_PYTHON NEW_PYTHON [--seconds 8] [--case NAME ...]

OLD_PYTHON and NEW_PYTHON are interpreters of venvs with each build installed. Prints, per case, the
median time of each and new/old.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CASES = {  # name: (T, B, I, H, train, proj_size)
    "stream B1 T200 H256": (200, 1, 256, 256, False, 0),
    "stream B1 T100 H512": (100, 1, 512, 512, False, 0),
    "projection B1 T100 H512 P256": (100, 1, 512, 512, False, 256),
    "batch B64 T50 H512": (50, 64, 512, 512, False, 0),
    "train B32 T100 H256": (100, 32, 256, 256, True, 0),
    "step B1 T1 H128 (x200)": (1, 1, 128, 128, False, 0),
}

WORKER = r"""
import sys, time, numpy as np
from lstmcpp import _core as core
core.set_num_threads(2)
CASES = %r
built = {}
def get(name):
    if name not in built:
        T, B, I, H, train, proj = CASES[name]
        m = core.ModelF32(I, H, 1, proj)
        m.params[:] = np.random.default_rng(0).uniform(-0.06, 0.06, m.params.size).astype(np.float32)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        dy = rng.standard_normal((T, B, proj or H)).astype(np.float32)
        reps = 200 if T == 1 else 1
        def run():
            for _ in range(reps):
                if train:
                    y, h, c, cache = m.forward(x, keep_cache=True)
                    m.backward(cache, dy)
                else:
                    m.forward(x)
        run()
        built[name] = run
    return built[name]
for line in sys.stdin:
    run = get(line.strip())
    t0 = time.perf_counter(); run(); run()
    print((time.perf_counter() - t0) / 2, flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_python")
    parser.add_argument("new_python")
    parser.add_argument("--seconds", type=float, default=8.0, help="per case (default 8)")
    parser.add_argument("--case", action="append", choices=list(CASES), help="only these cases")
    args = parser.parse_args()
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    workers = {label: subprocess.Popen([python, "-c", WORKER % (CASES,)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, env=env, cwd="/")
               for label, python in (("old", args.old_python), ("new", args.new_python))}

    def timed(label, name):
        worker = workers[label]
        worker.stdin.write(name + "\n")
        worker.stdin.flush()
        return float(worker.stdout.readline())

    for name in args.case or CASES:
        times = {"old": [], "new": []}
        end = time.time() + args.seconds
        while time.time() < end:
            for label in times:
                times[label].append(timed(label, name))
                time.sleep(0.02)
        old, new = (sorted(t)[len(t) // 2] for t in (times["old"], times["new"]))
        print(f"{name:30s} old {old * 1e3:8.3f} ms  new {new * 1e3:8.3f} ms  new/old {new / old:5.3f}"
              f"  ({len(times['old'])} rounds)", flush=True)
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
