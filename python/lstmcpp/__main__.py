"""The command line: ``python -m lstmcpp {demo,train-charlm,generate,forecast,quantize,check,bench,compare-cells,
gradient-flow,info} --help``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import numpy as np


def check(args: argparse.Namespace) -> int:
    """Forward and backward on random data, checked against the NumPy reference, and timed."""
    import lstmcpp
    from lstmcpp.tasks import check_against_reference

    T, B, H = args.steps, args.batch, args.hidden
    print(f"lstmcpp {lstmcpp.__version__}: {lstmcpp.info()['isa']} kernels, {lstmcpp.get_num_threads()} threads")
    print(f"LSTM(input={H}, hidden={H}, peepholes, 2 layers), T={T}, B={B}, float32")
    model = lstmcpp.LSTM(H, H, num_layers=2, peepholes=True, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    result = check_against_reference(model, x, dy)
    ok = result.worst < 1e-4
    print(f"output, input gradient and {len(result.errors) - 2} parameter gradients: max relative error "
          f"{result.worst:.1e}: " + ("matches the NumPy reference" if ok else "DOES NOT MATCH the NumPy reference"))
    print(f"forward + backward: lstmcpp {result.seconds * 1e3:.1f} ms, NumPy reference "
          f"{result.reference_seconds * 1e3:.1f} ms: {result.reference_seconds / result.seconds:.1f}x faster")
    return 0 if ok else 1


def train_charlm_on(text: str, args: argparse.Namespace, source: str) -> int:
    import lstmcpp
    from lstmcpp.tasks import train_charlm

    if args.threads:
        lstmcpp.set_num_threads(args.threads)

    def announce(lm, train_chars, val_chars):
        print(f"lstmcpp {lstmcpp.__version__} ({lstmcpp.info()['isa']} kernels, {lstmcpp.get_num_threads()} threads): "
              f"training a character LSTM on {source}")
        print(f"  {train_chars:,} training and {val_chars:,} validation characters, {len(lm.vocab)} distinct; "
              f"{lm.num_parameters():,} parameters (embedding {args.embedding}, {args.cell} {args.hidden} x {args.layers}); "
              f"batches of {args.batch} x {args.seq_len}; about {args.seconds:.0f} s")
        workers = getattr(args, "workers", None)
        if workers:
            where = f"the cluster at {args.scheduler}" if args.scheduler else "a local Dask cluster"
            print(f"  data-parallel on {workers} workers of {where}: each a shard of the text and {args.batch} streams, "
                  f"one all-reduce per step (gloo); validation on rank 0 after each pass")

    try:
        run = train_charlm(text, embedding_dim=args.embedding, hidden_size=args.hidden, num_layers=args.layers,
                           dropout=args.dropout, batch=args.batch, seq_len=args.seq_len, lr=args.lr,
                           seconds=args.seconds, epochs=args.epochs, seed=args.seed, progress=not args.no_progress,
                           on_start=announce, cell=args.cell, workers=getattr(args, "workers", None),
                           scheduler=getattr(args, "scheduler", None))
    except (ValueError, ImportError) as e:
        print(e, file=sys.stderr)
        return 2
    val = run.val_loss
    print(f"\nvalidation loss {val:.3f} nats/char ({val / np.log(2):.2f} bits) after {run.history.steps} steps in "
          f"{run.history.seconds:.0f} s; unigram baseline {run.baseline:.3f} nats/char: {100 * run.improvement:.0f}% lower")
    prompt = args.prompt
    print(f"\nsampled after {prompt!r} (temperature {args.temperature}):\n" + "-" * 60)
    print(prompt + run.model.generate(prompt, args.generate, temperature=args.temperature, top_k=args.top_k, seed=args.seed))
    print("-" * 60)
    lstmcpp.save(run.model, args.out)
    print(f"saved the model to {args.out} (python -m lstmcpp generate {args.out} --prompt ...)")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Train a CharLM on the standard library's source for about a minute."""
    from lstmcpp.tasks import stdlib_text

    return train_charlm_on(stdlib_text(args.max_chars), args, "the Python standard library's own source")


def train_charlm(args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return train_charlm_on(text, args, args.file)


def compare_cells(args: argparse.Namespace) -> int:
    """The four cells trained on the demo's text for the same time: a table and a PNG."""
    import lstmcpp
    from lstmcpp.studies import common_step, compare_cells as run, plot_curves
    from lstmcpp.tasks import stdlib_text

    if args.threads:
        lstmcpp.set_num_threads(args.threads)
    text = stdlib_text(args.max_chars)
    print(f"each cell trains a CharLM (embedding 64, hidden {args.hidden}) on the standard library's source "
          f"for {args.seconds:g} s of training ({lstmcpp.get_num_threads()} threads, {lstmcpp.info()['isa']} kernels):")
    curves = run(text, args.cells, seconds=args.seconds, hidden_size=args.hidden, seed=args.seed, log=print)
    same = common_step(curves)  # the most steps every cell validated at
    print(f"\n| cell | parameters | ms/step | steps in {args.seconds:g} s | validation loss at {args.seconds:g} s | "
          f"at step {same} |")
    print("|---|---|---|---|---|---|")
    for c in curves:
        print(f"| {c.cell} | {c.parameters:,} | {1e3 * c.seconds_per_step:.1f} | {c.steps[-1]} | {c.val_loss[-1]:.3f} | "
              f"{c.loss_at_step(same):.3f} |")
    try:
        plot_curves(curves, args.plot, f"CharLM on the standard library's source, {args.seconds:g} s of training each")
        print(f"\nwrote {args.plot}")
    except ImportError as e:
        print(f"\nno plot: {e}", file=sys.stderr)
    return 0


def gradient_flow(args: argparse.Namespace) -> int:
    """|dL/dx_t| against t for a tanh RNN, the LSTM and each variant: a PNG."""
    from lstmcpp.studies import gradient_flow as run, plot_gradient_flow

    flows = run(T=args.steps, hidden_size=args.hidden, seed=args.seed)
    print(f"|dL/dx_t| with the loss on step {args.steps - 1}'s output only (hidden {args.hidden}, default initialisation):")
    marks = [0, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps - 1]
    print(f"{'':24s}" + "".join(f"{'t=' + str(t):>10s}" for t in marks))
    for label, g in flows.items():
        print(f"{label:24s}" + "".join(f"{g[t]:10.1e}" for t in marks))
    try:
        plot_gradient_flow(flows, args.plot)
        print(f"wrote {args.plot}")
    except ImportError as e:
        print(f"no plot: {e}", file=sys.stderr)
    return 0


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
    """Fit a Forecaster on a real series; compare it with the classical methods over rolling
    origins; plot the last forecasts with their interval. (--dataset goog: the older one-step
    forecast of stock prices against the last value.)"""
    if args.dataset == "goog" and not args.csv:
        return forecast_goog(args)
    from lstmcpp import forecasting as F
    from lstmcpp.tasks import compare_forecasts

    try:
        if args.csv:
            task = csv_task(args, F)
        else:
            task = F.load_task(args.dataset)
    except (ImportError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    for name in ("horizon", "window", "season"):
        if getattr(args, name) is not None:
            setattr(task, name, getattr(args, name))
    print(f"forecasting {task.name} ({len(task.series)} values): {task.horizon} ahead from {task.window}, season "
          f"{task.season or 'none'}; rolling origins over the last {100 * task.test_fraction:.0f}%")
    try:
        calendar = [c for c in (args.calendar or "").split(",") if c]
        r = compare_forecasts(task, seconds=args.seconds, hidden_size=args.hidden, seed=args.seed,
                              progress=not args.no_progress, calendar=calendar)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"\n| method | mean absolute error ({task.unit}) | against the Forecaster's |")
    print("|---|---|---|")
    ours = r.errors["Forecaster"]
    for name, error in r.errors.items():
        print(f"| {name} | {error:.4g} | {error / ours:.2f}x |")
    print(f"\nthe 10-90% interval held {100 * r.coverage:.0f}% of the true values (80% intended)")
    try:
        _, plt = _require_matplotlib()
    except SystemExit:
        return 0
    fig, ax = plt.subplots(figsize=(11, 4))
    y, H = task.series, task.horizon
    shown = r.origins[-min(len(r.origins), 8):]
    start = max(0, shown[0] - 3 * task.window)
    ax.plot(np.arange(start, len(y)), y[start:], color="black", linewidth=1, label="truth")
    for k, o in enumerate(shown):
        row = len(r.origins) - len(shown) + k
        steps = np.arange(o, o + H)
        ax.fill_between(steps, r.bands[0.1][row], r.bands[0.9][row], color="tab:red", alpha=0.2,
                        label="10-90% interval" if k == 0 else None)
        ax.plot(steps, r.forecasts[row], color="tab:red", label="Forecaster" if k == 0 else None)
    ax.set_title(f"{task.name}: {H} ahead; mean absolute error {ours:.3g} {task.unit} "
                 f"(same season ago {r.errors['same season ago']:.3g})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"wrote {args.plot}")
    return 0


def csv_task(args: argparse.Namespace, F):
    """A forecasting task from a CSV column (rows in time order, or sorted by --time-column)."""
    import csv

    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or args.column not in rows[0]:
        raise ValueError(f"{args.csv}: no column {args.column!r} (columns: {list(rows[0]) if rows else []})")
    times = None
    if args.time_column:
        if args.time_column not in rows[0]:
            raise ValueError(f"{args.csv}: no column {args.time_column!r}")
        rows.sort(key=lambda r: r[args.time_column])
        try:
            times = np.array([r[args.time_column] for r in rows], "datetime64[s]")
        except ValueError:
            pass  # not ISO dates: the column still orders the rows
    series = np.array([float(r[args.column]) for r in rows])
    horizon, window = args.horizon or 1, args.window or 30
    season = args.season if args.season is not None else F.detect_season(series[: int(0.8 * len(series))])
    return F.Task(f"{args.csv}:{args.column}", series, horizon, max(window, 1), season, "", times=times)


def forecast_goog(args: argparse.Namespace) -> int:
    """GOOG's daily prices, one day ahead from the true history, against the last value (RMSE)."""
    from lstmcpp.tasks import forecast_one_step

    matplotlib, plt = _require_matplotlib()
    from matplotlib import cbook

    prices = cbook.get_sample_data("goog.npz")["price_data"]
    series, name = np.asarray(prices["adj_close"], np.float64), "GOOG adjusted close (matplotlib sample data)"
    window = args.window or 30
    split = int(len(series) * 0.8)
    print(f"forecasting {name}: {split} training and {len(series) - split} test days, window {window}")
    run = forecast_one_step(series, window=window, hidden_size=args.hidden, epochs=args.epochs, lr=args.lr,
                            test_fraction=0.2, seed=args.seed, progress=not args.no_progress)
    print(f"test RMSE: LSTM {run.rmse:.3f}, naive last-value forecast {run.rmse_naive:.3f} "
          f"(ratio {run.rmse / run.rmse_naive:.3f}; below 1 beats it)")
    fig, ax = plt.subplots(figsize=(10, 4))
    days = np.arange(len(series))
    ax.plot(days[: run.split], series[: run.split], color="0.6", label="history")
    ax.plot(days[run.split :], run.truth, color="black", label="truth")
    ax.plot(days[run.split :], run.predicted, color="tab:red", label="LSTM one-step forecast")
    ax.axvline(run.split, color="0.8", linestyle="--")
    ax.set_title(name)
    ax.set_xlabel("day")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"wrote {args.plot}")
    return 0


def read_series(path: str):
    """A file of numbers, a row a time step and a column a feature (commas or spaces between them;
    a first line that is not numbers, a header, is skipped)."""
    def numbers(row):
        try:
            return [float(v) for v in row]
        except ValueError:
            return None

    with open(path) as f:
        rows = [line.replace(",", " ").split() for line in f.read().splitlines() if line.strip()]
    if rows and numbers(rows[0]) is None:
        rows = rows[1:]  # a header
    values = [numbers(row) for row in rows]
    if not values or any(v is None or len(v) != len(values[0]) for v in values):
        raise ValueError(f"--data {path}: expected numbers, a row a time step and the same columns in every row")
    return np.array(values)


def quantize(args: argparse.Namespace) -> int:
    """Quantize a saved model; report size, speed and loss before and after; save it."""
    import lstmcpp
    from lstmcpp.tasks import quantize_report

    model = lstmcpp.load(args.model)
    text = series = None
    try:
        if args.data and isinstance(model, lstmcpp.models.Forecaster):
            series = read_series(args.data)
        elif args.data:
            with open(args.data, encoding="utf-8", errors="replace") as f:
                text = f.read()
        quantized, r = quantize_report(model, args.scheme, text, series=series)
    except (TypeError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{args.model}: {type(model).__name__}, quantized to {r.scheme}")
    print(f"  LSTM matrices: {r.float_bytes:,} bytes -> {r.quantized_bytes:,} ({r.quantized_bytes / r.float_bytes:.2f}x)")
    print(f"  {r.what}:")
    print(f"    time {r.float_seconds * 1e3:.1f} ms -> {r.quantized_seconds * 1e3:.1f} ms "
          f"(speed {r.float_seconds / r.quantized_seconds:.2f}x)")
    change = f"{100 * r.loss_change:+.2f}%" if r.float_loss else f"{r.quantized_loss:.2e}"
    print(f"    loss {r.float_loss:.4f} -> {r.quantized_loss:.4f} ({change})")
    lstmcpp.save(quantized, args.out)
    print(f"saved {args.out}")
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
        p.add_argument("--cell", default="lstm", choices=["lstm", "layernorm", "cifg", "mogrifier"],
                       help="the cell: the LSTM, layer-normalised, coupled input-forget, or the Mogrifier's five "
                            "rounds (default lstm)")
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
    p.add_argument("--workers", type=int, default=None,
                   help="data-parallel on this many Dask workers: a local cluster sharing this machine's cores, or "
                        "--scheduler's (needs pip install \"lstmcpp[dask,distributed]\")")
    p.add_argument("--scheduler", default=None, help="the address of an existing Dask scheduler (tcp://host:8786)")
    p.set_defaults(run=train_charlm)

    p = sub.add_parser("generate", help="continue a prompt with a saved character LSTM")
    p.add_argument("model", help="a model saved by demo or train-charlm")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("-n", type=int, default=400, help="characters to generate (default 400)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.set_defaults(run=generate)

    p = sub.add_parser("forecast", help="fit a Forecaster on a real series (default: Seattle's hourly temperatures, a day "
                                        "ahead), compare it with the classical methods, plot it")
    p.add_argument("--dataset", default="seattle-temps",
                   choices=["seattle-temps", "seattle-weather", "sunspots", "elnino", "goog"],
                   help="the series (vega-datasets' and statsmodels': pip install \"lstmcpp[forecast]\"; goog: "
                        "matplotlib's sample stock prices, one day ahead) (default seattle-temps)")
    p.add_argument("--csv", help="a CSV file with the series instead")
    p.add_argument("--column", default="close", help="the CSV column to forecast (default 'close')")
    p.add_argument("--time-column", help="the CSV column to order the rows by")
    p.add_argument("--horizon", type=int, help="values ahead (default: the dataset's; 1 for a CSV)")
    p.add_argument("--window", type=int, help="values the model sees (default: the dataset's; 30 for a CSV)")
    p.add_argument("--season", type=int, help="the seasonal period (default: the dataset's; read off a CSV's series)")
    p.add_argument("--calendar", default="", help="calendar features from the times, comma-separated among hour, "
                                                "dayofweek, dayofyear, month (a CSV needs --time-column in ISO dates)")
    p.add_argument("--seconds", type=float, default=60.0, help="training time budget (default 60)")
    p.add_argument("--hidden", type=int, default=32, help="LSTM hidden size (default 32)")
    p.add_argument("--epochs", type=int, default=20, help="training passes, --dataset goog (default 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, --dataset goog (default 1e-3)")
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
    p = sub.add_parser("quantize", help="quantize a saved model; print its size, speed and loss before and after")
    p.add_argument("model", help="a model saved by lstmcpp: an LSTM, a CharLM (from demo or train-charlm), a "
                                 "Forecaster or an AttentionClassifier")
    p.add_argument("--scheme", default="int8", choices=["int8", "bf16", "codebook4", "codebook8"],
                   help="the weight format (default int8)")
    p.add_argument("-o", "--out", required=True, help="where to save the quantized model")
    p.add_argument("--data", help="a CharLM's text to measure the held-out loss on (default: the demo's text); a "
                                  "Forecaster's series (needed: numbers, a row a time step, a column a feature); an "
                                  "AttentionClassifier is measured on random token sequences")
    p.set_defaults(run=quantize)

    p = sub.add_parser("compare-cells", help="the LSTM, layer-norm, CIFG and Mogrifier cells trained on the demo's text "
                                             "for the same time: validation loss, speed, a PNG of the learning curves")
    p.add_argument("--seconds", type=float, default=60.0, help="training time of each cell (default 60)")
    p.add_argument("--cells", nargs="+", default=["lstm", "layernorm", "cifg", "mogrifier"],
                   choices=["lstm", "layernorm", "cifg", "mogrifier"], help="which cells (default all four)")
    p.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    p.add_argument("--max-chars", type=int, default=4_000_000, help="use at most this much source (default 4,000,000)")
    p.add_argument("--plot", default="cells.png", help="where to write the PNG (default cells.png)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    p.set_defaults(run=compare_cells)

    p = sub.add_parser("gradient-flow", help="|dL/dx_t| against t for a tanh RNN, the LSTM and each variant (a PNG)")
    p.add_argument("--steps", type=int, default=100, help="sequence length (default 100)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    p.add_argument("--plot", default="gradient_flow.png", help="where to write the PNG (default gradient_flow.png)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=gradient_flow)

    p = sub.add_parser("info", help="version, instruction set in use, threads, BLAS")
    p.set_defaults(run=info)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
