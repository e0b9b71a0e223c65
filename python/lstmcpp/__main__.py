"""The command line: ``python -m lstmcpp {demo,info,bench} --help``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, List, Optional

import numpy as np


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def demo(args: argparse.Namespace) -> int:
    """Forward and backward on random data, checked against the NumPy reference, and timed."""
    import lstmcpp
    from lstmcpp import reference

    T, B, H = args.steps, args.batch, args.hidden
    print(f"lstmcpp {lstmcpp.__version__}: {lstmcpp.info()['isa']} kernels, {lstmcpp.get_num_threads()} threads")
    print(f"LSTM(input={H}, hidden={H}, peepholes, 2 layers), T={T}, B={B}, float32")
    model = lstmcpp.LSTM(H, H, num_layers=2, peepholes=True, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    y, (h_n, c_n), cache = model.forward(x)
    model.zero_grad()
    dx, _ = model.backward(cache, dy)
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    y_ref, _, ref_cache = reference.forward(model.config, params, x.astype(np.float64))
    dx_ref, _, grads_ref = reference.backward(ref_cache, dy.astype(np.float64))

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    worst = max([rel(y, y_ref), rel(dx, dx_ref)] + [rel(model.grads[k], g) for k, g in grads_ref.items()])
    ok = worst < 1e-4
    print(f"output, input gradient and {len(grads_ref)} parameter gradients: max relative error {worst:.1e}: "
          + ("matches the NumPy reference" if ok else "DOES NOT MATCH the NumPy reference"))

    def ours():
        _, _, c = model.forward(x)
        model.backward(c, dy)

    def theirs():
        _, _, c = reference.forward(model.config, params, x.astype(np.float64))
        reference.backward(c, dy.astype(np.float64))

    ours()
    t_ours, t_ref = _median_time(ours, 5), _median_time(theirs, 3)
    print(f"forward + backward: lstmcpp {t_ours * 1e3:.1f} ms, NumPy reference {t_ref * 1e3:.1f} ms: "
          f"{t_ref / t_ours:.1f}x faster")
    return 0 if ok else 1


def info(args: argparse.Namespace) -> int:
    import lstmcpp

    print(json.dumps(lstmcpp.info(), indent=2))
    return 0


def bench(args: argparse.Namespace) -> int:
    """The benchmark table. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow OpenBLAS: they are dropped
    for the benchmark process only (it re-executes itself without them)."""
    import os

    slowing = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    if slowing:
        env = {k: v for k, v in os.environ.items() if k not in slowing}
        print(f"bench: running without {', '.join(slowing)}", flush=True)
        os.execve(sys.executable, [sys.executable, "-m", "lstmcpp"] + sys.argv[1:], env)
    from lstmcpp import bench as bench_module

    return bench_module.main(quick=args.quick, json_path=args.json, threads=args.threads, cases=args.case)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstmcpp", description="lstmcpp: a fast CPU LSTM.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run a layer forward and backward, check it against the NumPy reference, time it")
    p.add_argument("--steps", type=int, default=100, help="time steps T (default 100)")
    p.add_argument("--batch", type=int, default=32, help="batch size B (default 32)")
    p.add_argument("--hidden", type=int, default=256, help="input and hidden size H (default 256)")
    p.set_defaults(run=demo)
    p = sub.add_parser("bench", help="lstmcpp against NumPy, PyTorch and ONNX Runtime, as ratios")
    p.add_argument("--quick", action="store_true", help="a subset, in under a minute")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--threads", type=int, default=2, help="threads for every implementation (default 2)")
    p.add_argument("--case", action="append", help="run only this case (repeatable), e.g. 'stream H256'")
    p.set_defaults(run=bench)
    p = sub.add_parser("info", help="version, instruction set in use, threads, BLAS")
    p.set_defaults(run=info)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
