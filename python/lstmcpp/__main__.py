"""The command line: ``python -m lstmcpp {demo,train-charlm,generate,forecast,check,bench,info} --help``."""

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


def check(args: argparse.Namespace) -> int:
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


def stdlib_text(max_chars: int) -> str:
    """The Python standard library's own top-level modules, concatenated in name order (present on
    every machine: no download), as ASCII (other characters become '?')."""
    import glob
    import os
    import sysconfig

    parts, total = [], 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().encode("ascii", "replace").decode("ascii")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


def unigram_cross_entropy(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats per character) of the validation text under the training text's
    character frequencies (add-one smoothed): the baseline a language model must beat."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    return float(-np.mean(np.log(counts / counts.sum())[val_ids]))


def train_charlm_on(text: str, args: argparse.Namespace, source: str) -> int:
    from lstmcpp import save
    from lstmcpp.models import CharLM
    from lstmcpp.optim import Adam
    from lstmcpp.train import fit

    import lstmcpp

    if args.threads:
        lstmcpp.set_num_threads(args.threads)
    held_out = max(len(text) // 20, args.batch * (args.seq_len + 1) * 2)
    if len(text) < 2 * held_out:
        print(f"the text is too short ({len(text)} characters) for batches of {args.batch} x {args.seq_len}", file=sys.stderr)
        return 2
    lm = CharLM.from_text(text, embedding_dim=args.embedding, hidden_size=args.hidden, num_layers=args.layers,
                          dropout=args.dropout, seed=args.seed)
    ids = lm.encode(text)
    train_ids, val_ids = ids[:-held_out], ids[-held_out:]
    print(f"lstmcpp {lstmcpp.__version__} ({lstmcpp.info()['isa']} kernels, {lstmcpp.get_num_threads()} threads): "
          f"training a character LSTM on {source}")
    print(f"  {len(train_ids):,} training and {len(val_ids):,} validation characters, {len(lm.vocab)} distinct; "
          f"{lm.num_parameters():,} parameters (embedding {args.embedding}, LSTM {args.hidden} x {args.layers}); "
          f"batches of {args.batch} x {args.seq_len}; about {args.seconds:.0f} s")
    history = fit(
        lm, lm.batches(train_ids, args.batch, args.seq_len, seed=args.seed), epochs=args.epochs,
        optimizer=Adam(lm, lr=args.lr), val_data=lm.batches(val_ids, args.batch, args.seq_len, seed=0),
        clip_norm=1.0, time_budget=args.seconds, progress=not args.no_progress, unit="chars",
    )
    baseline = unigram_cross_entropy(train_ids, val_ids, len(lm.vocab))
    val = history.val_loss[-1]
    better = 1.0 - val / baseline
    print(f"\nvalidation loss {val:.3f} nats/char ({val / np.log(2):.2f} bits) after {history.steps} steps in "
          f"{history.seconds:.0f} s; unigram baseline {baseline:.3f} nats/char: {100 * better:.0f}% lower")
    prompt = args.prompt
    print(f"\nsampled after {prompt!r} (temperature {args.temperature}):\n" + "-" * 60)
    print(prompt + lm.generate(prompt, args.generate, temperature=args.temperature, top_k=args.top_k, seed=args.seed))
    print("-" * 60)
    save(lm, args.out)
    print(f"saved the model to {args.out} (python -m lstmcpp generate {args.out} --prompt ...)")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Train a CharLM on the standard library's source for about a minute."""
    text = stdlib_text(args.max_chars)
    return train_charlm_on(text, args, "the Python standard library's own source")


def train_charlm(args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return train_charlm_on(text, args, args.file)


def generate(args: argparse.Namespace) -> int:
    from lstmcpp import load
    from lstmcpp.models import CharLM

    lm = load(args.model)
    if not isinstance(lm, CharLM):
        print(f"{args.model} holds a {type(lm).__name__}, not a CharLM", file=sys.stderr)
        return 2
    print(args.prompt + lm.generate(args.prompt, args.n, temperature=args.temperature, top_k=args.top_k, seed=args.seed))
    return 0


def _require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return matplotlib, plt
    except ImportError:
        raise SystemExit("forecast needs matplotlib (its sample data and the plot): pip install matplotlib") from None


def forecast(args: argparse.Namespace) -> int:
    """Train a Forecaster on a real series; report the test error against a naive forecast."""
    from lstmcpp.models import Forecaster
    from lstmcpp.optim import Adam
    from lstmcpp.train import fit

    matplotlib, plt = _require_matplotlib()
    if args.csv:
        import csv

        with open(args.csv, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or args.column not in rows[0]:
            print(f"{args.csv}: no column {args.column!r} (columns: {list(rows[0]) if rows else []})", file=sys.stderr)
            return 2
        series, name = np.array([float(r[args.column]) for r in rows]), f"{args.csv}:{args.column}"
    else:
        from matplotlib import cbook

        prices = cbook.get_sample_data("goog.npz")["price_data"]
        series, name = np.asarray(prices["adj_close"], np.float64), "GOOG adjusted close (matplotlib sample data)"
    split = int(len(series) * (1 - args.test_fraction))
    if split <= args.window + 2 or len(series) - split < 2:
        print(f"the series ({len(series)} values) is too short for window {args.window}", file=sys.stderr)
        return 2
    # The model sees day-to-day changes (prices wander far outside any training range).
    changes = np.diff(series)
    model = Forecaster(window=args.window, hidden_size=args.hidden, seed=args.seed)
    model.fit_scaling(changes[: split - 1])
    train_changes = changes[: split - 1]
    print(f"forecasting {name}: {split} training and {len(series) - split} test days, window {args.window}")
    fit(model, model.windows(train_changes, 32, seed=args.seed), epochs=args.epochs, optimizer=Adam(model, lr=args.lr),
        progress=not args.no_progress, unit="windows", log=None)
    # One-step-ahead forecasts over the test period, each from the true history before it.
    predicted = np.array([series[t - 1] + model.forecast(changes[: t - 1], 1)[0] for t in range(split, len(series))])
    truth, naive = series[split:], series[split - 1 : -1]
    rmse = float(np.sqrt(np.mean((predicted - truth) ** 2)))
    rmse_naive = float(np.sqrt(np.mean((naive - truth) ** 2)))
    print(f"test RMSE: LSTM {rmse:.3f}, naive last-value forecast {rmse_naive:.3f} (ratio {rmse / rmse_naive:.3f}; below 1 beats it)")
    fig, ax = plt.subplots(figsize=(10, 4))
    days = np.arange(len(series))
    ax.plot(days[:split], series[:split], color="0.6", label="history")
    ax.plot(days[split:], truth, color="black", label="truth")
    ax.plot(days[split:], predicted, color="tab:red", label="LSTM one-step forecast")
    ax.axvline(split, color="0.8", linestyle="--")
    ax.set_title(name)
    ax.set_xlabel("day")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"wrote {args.plot}")
    return 0


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
    def charlm_options(p, seconds):
        p.add_argument("--seconds", type=float, default=seconds, help=f"training time budget (default {seconds:g})")
        p.add_argument("--epochs", type=int, default=100, help="at most this many passes (default 100)")
        p.add_argument("--hidden", type=int, default=256, help="LSTM hidden size (default 256)")
        p.add_argument("--embedding", type=int, default=64, help="embedding size (default 64)")
        p.add_argument("--layers", type=int, default=1, help="LSTM layers (default 1)")
        p.add_argument("--dropout", type=float, default=0.0, help="dropout between LSTM layers (default 0)")
        p.add_argument("--batch", type=int, default=32, help="parallel streams per batch (default 32)")
        p.add_argument("--seq-len", type=int, default=100, help="characters per chunk of truncated BPTT (default 100)")
        p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
        p.add_argument("--prompt", default="def ", help="text to continue after training (default 'def ')")
        p.add_argument("--generate", type=int, default=400, help="characters to generate (default 400)")
        p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
        p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("demo", help="train a character LSTM on the standard library's source (~1 min), report, generate, save")
    charlm_options(p, 60.0)
    p.add_argument("--max-chars", type=int, default=4_000_000, help="use at most this much source (default 4,000,000)")
    p.add_argument("--out", default="charlm_stdlib.npz", help="where to save the model (default charlm_stdlib.npz)")
    p.set_defaults(run=demo)

    p = sub.add_parser("train-charlm", help="train a character LSTM on your own text file")
    p.add_argument("file", help="a UTF-8 text file")
    charlm_options(p, 300.0)
    p.add_argument("--out", default="charlm.npz", help="where to save the model (default charlm.npz)")
    p.set_defaults(run=train_charlm)

    p = sub.add_parser("generate", help="continue a prompt with a saved character LSTM")
    p.add_argument("model", help="a model saved by demo or train-charlm")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("-n", type=int, default=400, help="characters to generate (default 400)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.set_defaults(run=generate)

    p = sub.add_parser("forecast", help="forecast a series (default: stock prices from matplotlib's sample data), plot it")
    p.add_argument("--csv", help="a CSV file with the series (default: matplotlib's GOOG sample prices)")
    p.add_argument("--column", default="close", help="the CSV column to forecast (default 'close')")
    p.add_argument("--window", type=int, default=30, help="days the model sees (default 30)")
    p.add_argument("--hidden", type=int, default=32, help="LSTM hidden size (default 32)")
    p.add_argument("--epochs", type=int, default=20, help="training passes (default 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="the last part held out for testing (default 0.2)")
    p.add_argument("--plot", default="forecast.png", help="where to write the PNG plot (default forecast.png)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=forecast)

    p = sub.add_parser("check", help="run a layer forward and backward, check it against the NumPy reference, time it")
    p.add_argument("--steps", type=int, default=100, help="time steps T (default 100)")
    p.add_argument("--batch", type=int, default=32, help="batch size B (default 32)")
    p.add_argument("--hidden", type=int, default=256, help="input and hidden size H (default 256)")
    p.set_defaults(run=check)

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
