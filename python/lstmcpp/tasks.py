"""The jobs the command line runs, as functions that return their results (the CLI only parses
arguments and prints): check a layer against the NumPy reference, train a character language
model on a text, forecast a series one step ahead."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import sysconfig
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from . import reference
from ._lstm import LSTM
from .models import CharLM, Forecaster, text_batches
from .optim import Adam
from .train import History, fit


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """The median of ``repeats`` wall-clock timings of ``fn()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# ------------------------------------------------------------------------------------------------
# checking against the reference


@dataclasses.dataclass
class Check:
    errors: Dict[str, float]  # output, input gradient and every parameter gradient: max relative error
    seconds: float            # lstmcpp's forward + backward (median)
    reference_seconds: float  # the NumPy reference's

    @property
    def worst(self) -> float:
        return max(self.errors.values())


def check_against_reference(model: LSTM, x: np.ndarray, dy: np.ndarray, repeats: int = 5) -> Check:
    """Forward and backward through ``model`` and the float64 NumPy reference on the same weights:
    the largest relative error of each result, and both times. ``x`` (T,B,I) and ``dy`` time-major."""
    y, _, cache = model.forward(x)
    model.zero_grad()
    dx, _ = model.backward(cache, dy)
    config, params = reference.Config.of(model), {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    y_ref, _, ref_cache = reference.forward(config, params, x.astype(np.float64))
    dx_ref, _, grads_ref = reference.backward(ref_cache, dy.astype(np.float64))

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    errors = {"y": rel(y, y_ref), "dx": rel(dx, dx_ref), **{k: rel(model.grads[k], g) for k, g in grads_ref.items()}}

    def ours():
        _, _, c = model.forward(x)
        model.backward(c, dy)

    def theirs():
        _, _, c = reference.forward(config, params, x.astype(np.float64))
        reference.backward(c, dy.astype(np.float64))

    ours()
    return Check(errors, median_time(ours, repeats), median_time(theirs, max(1, repeats // 2)))


# ------------------------------------------------------------------------------------------------
# a character language model


def stdlib_text(max_chars: int) -> str:
    """The Python standard library's own top-level modules, concatenated in name order (present on
    every machine: no download), as ASCII (other characters become '?')."""
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


@dataclasses.dataclass
class CharLMRun:
    model: CharLM
    history: History
    train_chars: int
    val_chars: int
    val_loss: float   # nats per character on the held-out end of the text
    baseline: float   # the unigram baseline's, on the same characters

    @property
    def improvement(self) -> float:
        """How much lower the validation loss is than the baseline's (0.5: half)."""
        return 1.0 - self.val_loss / self.baseline


def held_out_size(text_length: int, batch: int, seq_len: int) -> int:
    """Characters kept from the end of a text for validation: a twentieth, and at least two batches."""
    return max(text_length // 20, batch * (seq_len + 1) * 2)


# The cells the command line's --cell names (SPEC §7), as LSTM arguments. The Mogrifier's five
# rounds are the paper's choice for character models.
CELLS = {
    "lstm": {},
    "layernorm": dict(layer_norm=True),
    "cifg": dict(coupled_input_forget=True),
    "mogrifier": dict(mogrify_rounds=5),
}


def train_charlm(text: str, *, embedding_dim: int = 64, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, batch: int = 32, seq_len: int = 100, lr: float = 3e-3,
                 seconds: Optional[float] = None, epochs: int = 1000, seed: int = 0, progress: bool = True,
                 on_start: Optional[Callable[[CharLM, int, int], None]] = None, cell: str = "lstm",
                 steps: Optional[int] = None, val_every: Optional[int] = None, workers: Optional[int] = None,
                 scheduler: Optional[str] = None) -> CharLMRun:
    """Train a :class:`CharLM` on ``text`` (its last :func:`held_out_size` characters held out),
    with Adam and gradient clipping, for ``epochs`` or ``seconds`` (or ``steps`` batches). ``cell``
    is a key of :data:`CELLS`. ``on_start(model, train_chars, val_chars)`` runs before training
    (the CLI prints there). ``workers``: data-parallel on that many Dask workers
    (:func:`train_charlm_on_dask`), on a local cluster or the one at ``scheduler``."""
    if cell not in CELLS:
        raise ValueError(f"cell: expected one of {list(CELLS)}, got {cell!r}")
    held_out = held_out_size(len(text), batch, seq_len)
    if len(text) < 2 * held_out:
        raise ValueError(f"text: too short ({len(text)} characters) for batches of {batch} x {seq_len}")
    lm = CharLM.from_text(text, embedding_dim=embedding_dim, hidden_size=hidden_size, num_layers=num_layers,
                          dropout=dropout, seed=seed, **CELLS[cell])
    ids = lm.encode(text)
    train_ids, val_ids = ids[:-held_out], ids[-held_out:]
    if on_start is not None:
        on_start(lm, len(train_ids), len(val_ids))
    if workers is not None:
        lm, history = train_charlm_on_dask(lm, train_ids, val_ids, workers=workers, scheduler=scheduler, batch=batch,
                                           seq_len=seq_len, lr=lr, seconds=seconds, epochs=epochs, seed=seed)
        return CharLMRun(lm, history, len(train_ids), len(val_ids), history.val_loss[-1],
                         unigram_cross_entropy(train_ids, val_ids, len(lm.vocab)))
    history = fit(
        lm, lm.batches(train_ids, batch, seq_len, seed=seed), epochs=epochs,
        optimizer=Adam(lm, lr=lr), val_data=lm.batches(val_ids, batch, seq_len, seed=0),
        clip_norm=1.0, time_budget=seconds, progress=progress, unit="chars",
    )
    return CharLMRun(lm, history, len(train_ids), len(val_ids), history.val_loss[-1],
                     unigram_cross_entropy(train_ids, val_ids, len(lm.vocab)))


def _shard_batches(ids: np.ndarray, batch: int, seq_len: int, seed: int) -> list:
    return list(text_batches(ids, batch, seq_len, seed=seed)())


def train_charlm_on_dask(lm: CharLM, train_ids: np.ndarray, val_ids: np.ndarray, *, workers: int,
                         scheduler: Optional[str] = None, batch: int = 32, seq_len: int = 100, lr: float = 3e-3,
                         seconds: Optional[float] = None, epochs: int = 1000, seed: int = 0) -> Tuple[CharLM, History]:
    """Data-parallel training of ``lm`` with :func:`lstmcpp.dask.fit`: the training text cut into
    ``workers`` contiguous shards, each one rank's ``batch`` streams (so a step sees ``workers *
    batch`` streams), Adam, gradient clipping, rank 0 validating on ``val_ids`` each epoch. On a
    local cluster of ``workers`` processes sharing this machine's cores, or on the cluster at
    ``scheduler``, of whose workers it uses ``workers``."""
    import dask
    import dask.bag as db
    from distributed import Client, LocalCluster

    from . import dask as lstmcpp_dask

    if workers < 1:
        raise ValueError(f"workers: expected >= 1, got {workers}")
    share = len(train_ids) // workers  # equal shards: every rank has as many batches
    # each worker cuts its own shard into batches: the graph carries the ids, not the batches
    parts = [dask.delayed(_shard_batches)(train_ids[r * share : (r + 1) * share], batch, seq_len, seed + r)
             for r in range(workers)]
    val = list(lm.batches(val_ids, batch, seq_len, seed=0)())
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            threads = max(1, (os.cpu_count() or 1) // workers)
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                                       dashboard_address=":0"))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler))
            if len(client.nthreads()) < workers:
                raise ValueError(f"workers: the cluster at {scheduler} has {len(client.nthreads())} workers, "
                                 f"fewer than {workers}")
        return lstmcpp_dask.fit(lm, db.from_delayed(parts), client=client, epochs=epochs,
                                optimizer=("adam", {"lr": lr}), clip_norm=1.0, time_budget=seconds, val_data=val,
                                log=print)


# ------------------------------------------------------------------------------------------------
# forecasting


@dataclasses.dataclass
class ForecastRun:
    model: Forecaster
    split: int              # the first test index of the series
    predicted: np.ndarray   # one-step-ahead forecasts of series[split:]
    truth: np.ndarray       # series[split:]
    naive: np.ndarray       # the last-value forecast, series[split-1:-1]

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean((self.predicted - self.truth) ** 2)))

    @property
    def rmse_naive(self) -> float:
        return float(np.sqrt(np.mean((self.naive - self.truth) ** 2)))


def forecast_one_step(series: np.ndarray, *, window: int = 30, hidden_size: int = 64, epochs: int = 30,
                      lr: float = 3e-3, test_fraction: float = 0.2, seed: int = 0, progress: bool = True) -> ForecastRun:
    """Train a :class:`Forecaster` on the day-to-day changes of the first part of ``series`` (prices
    wander far outside any training range; changes do not), then forecast each test value one step
    ahead from the true history before it."""
    series = np.asarray(series, np.float64)
    split = int(len(series) * (1 - test_fraction))
    if split <= window + 2 or len(series) - split < 2:
        raise ValueError(f"series: too short ({len(series)} values) for window {window}")
    changes = np.diff(series)
    model = Forecaster(window=window, hidden_size=hidden_size, seed=seed)
    train_changes = changes[: split - 1]
    model.fit_scaling(train_changes)
    fit(model, model.windows(train_changes, 32, seed=seed), epochs=epochs, optimizer=Adam(model, lr=lr),
        progress=progress, unit="windows", log=None)
    predicted = np.array([series[t - 1] + model.forecast(changes[: t - 1], 1)[0] for t in range(split, len(series))])
    return ForecastRun(model, split, predicted, series[split:], series[split - 1 : -1])


@dataclasses.dataclass
class ForecastComparison:
    """A Forecaster fitted on a task's series before its first rolling origin, and the classical
    methods, each forecasting at every origin from the history before it."""

    task: Any
    model: Forecaster
    fit_info: Dict[str, Any]
    errors: Dict[str, float]       # method -> mean absolute error over the origins
    origins: np.ndarray
    forecasts: np.ndarray          # (origins, horizon) the Forecaster's
    bands: Dict[float, np.ndarray]  # quantile -> (origins, horizon)
    coverage: float                # the share of true values inside the outermost band


def compare_forecasts(task, *, seconds: float = 60.0, hidden_size: int = 32, seed: int = 0,
                      quantiles: Sequence[float] = (0.1, 0.5, 0.9), val_fraction: float = 0.3, progress: bool = True,
                      log: Optional[Callable[[str], None]] = print, calendar: Sequence[str] = ()) -> ForecastComparison:
    """Fit a :class:`Forecaster` on ``task`` (an :class:`lstmcpp.forecasting.Task`) and measure it
    and the baselines (last value, same season ago, and statsmodels' Holt-Winters when installed).
    It validates on the last 30% of its windows (fit's default is 10%): on these series a tenth
    holds too few seasons to choose the baseline well (measured: sunspots 35.0 with a tenth, 28.1
    with 30%; elnino 0.858 and 0.817; seattle-weather 2.93 and 2.81; seattle-temps unchanged).
    ``calendar``: the Forecaster's calendar features, from the task's times."""
    from . import forecasting as F

    y = task.series
    origins = F.rolling_origins(len(y), task.horizon, task.window, task.test_fraction)
    if origins.size == 0:
        raise ValueError(f"series: {len(y)} values leave no forecast origin for window {task.window} and horizon "
                         f"{task.horizon}")
    model = Forecaster(window=task.window, horizon=task.horizon, hidden_size=hidden_size, seed=seed,
                       season=task.season, quantiles=quantiles, calendar=calendar)
    times = task.times if calendar else None
    if calendar and times is None:
        raise ValueError(f"calendar: the series {task.name!r} has no times")
    info = model.fit(y[: origins[0]], times=None if times is None else times[: origins[0]], time_budget=seconds,
                     seed=seed, val_fraction=val_fraction, progress=progress, log=log)
    forecasts, bands = [], {q: [] for q in quantiles}
    for o in origins:
        point, qs = model.forecast(y[:o], task.horizon, quantiles=quantiles, times=None if times is None else times[:o])
        forecasts.append(point)
        for q in quantiles:
            bands[q].append(qs[q])
    forecasts = np.asarray(forecasts)
    truth = np.stack([y[o : o + task.horizon] for o in origins])
    errors = {"Forecaster": float(np.abs(forecasts - truth).mean()),
              "last value": F.evaluate(task, F.last_value()),
              "same season ago": F.evaluate(task, F.seasonal_naive(task.season))}
    try:
        errors["Holt-Winters"] = F.evaluate(task, F.holt_winters(task.season, task.trend))
    except ImportError as e:
        if log is not None:
            log(f"no Holt-Winters: {e}")
    bands = {q: np.asarray(v) for q, v in bands.items()}
    low, high = bands[min(quantiles)], bands[max(quantiles)]
    coverage = float(np.mean((truth >= low) & (truth <= high)))
    return ForecastComparison(task, model, info, errors, origins, forecasts, bands, coverage)


# ------------------------------------------------------------------------------------------------
# quantizing a saved model


@dataclasses.dataclass
class QuantizeReport:
    scheme: str
    float_bytes: int        # the LSTM's matrices in float32
    quantized_bytes: int    # the same matrices in the scheme, scales included
    float_seconds: float    # the measurement below, float model
    quantized_seconds: float
    what: str               # what was timed, and what the losses are
    float_loss: float
    quantized_loss: float

    @property
    def loss_change(self) -> float:
        """Relative change of the loss (0.01: 1% higher), or the absolute change when the float loss is 0."""
        return (self.quantized_loss - self.float_loss) / (self.float_loss or 1.0)


def charlm_held_out_loss(lm: CharLM, text: str, batch: int = 32, seq_len: int = 100) -> float:
    """Nats per character on the held-out end of ``text`` (the part :func:`train_charlm` keeps out)."""
    ids = lm.encode(text)
    held = ids[-held_out_size(len(text), batch, seq_len):]
    lm.reset_state()
    total = count = 0
    for chunk in lm.batches(held, batch, seq_len, seed=0)():
        loss, n = lm.evaluate(chunk)
        total, count = total + loss, count + n
    lm.reset_state()
    return total / count


def forecaster_held_out_error(model: Forecaster, series: np.ndarray, fraction: float = 0.1,
                              most: int = 200) -> float:
    """The mean absolute error (in the series' units) of ``model``'s forecasts of its whole horizon
    from the last ``fraction`` of the origins of ``series`` (as :meth:`Forecaster.fit` holds out
    its validation part; at most ``most`` of them, the last)."""
    s = np.asarray(series, np.float64)
    s = s[:, None] if s.ndim == 1 else s
    if s.ndim != 2 or s.shape[1] != model.n_features:
        raise ValueError(f"series: expected (N,) or (N, {model.n_features}) values, got shape {np.shape(series)}")
    reads = model._history_length() if model.baseline >= 0 else model.window  # values a forecast reads
    origins = np.arange(reads, len(s) - model.horizon + 1)
    if len(origins) == 0:
        raise ValueError(f"series: {len(s)} values are too few for a forecast of {model.horizon} after {reads}")
    held_out = origins[-min(most, max(1, int(round(len(origins) * fraction)))):]
    errors = [np.abs(model.forecast(s[o - reads : o], model.horizon).reshape(model.horizon, -1) - s[o : o + model.horizon]).mean()
              for o in held_out]
    return float(np.mean(errors))


def quantize_report(model, scheme: str, text: Optional[str] = None, seed: int = 0,
                    series: Optional[np.ndarray] = None):
    """``lstmcpp.quantize(model, scheme)`` and what it changed: the size of the LSTM's matrices, the
    time and the loss of the model's own measurement before and after. A CharLM is measured on the
    held-out end of ``text`` (default: the demo's text, the standard library's source); a
    Forecaster by its forecasts' mean absolute error from the last 10% of ``series``' origins (it
    needs ``series``); an AttentionClassifier on random token sequences (loss: the RMS difference
    from the float model's probabilities); an LSTM on a random sequence (time of a call; loss:
    the RMS difference from the float model's output)."""
    from .models import AttentionClassifier
    from .quantize import quantize

    quantized = quantize(model, scheme)
    lstm, qlstm = (model.lstm, quantized.lstm) if hasattr(model, "lstm") else (model, quantized)
    float_bytes = 4 * sum(p.size for n, p in lstm.state_dict().items() if n.startswith(("weight_ih", "weight_hh", "weight_hr")))

    def timed(measure):  # the model's own measurement, float then quantized: (losses, seconds)
        losses, seconds = {}, {}
        for label, m in (("float", model), ("quantized", quantized)):
            start = time.perf_counter()
            losses[label] = measure(m)
            seconds[label] = time.perf_counter() - start
        return losses, seconds

    if isinstance(model, CharLM):
        text = stdlib_text(4_000_000) if text is None else text
        losses, seconds = timed(lambda m: charlm_held_out_loss(m, text))
        what = f"held-out loss (nats/char) on the last {held_out_size(len(text), 32, 100):,} characters"
    elif isinstance(model, Forecaster):
        if series is None:
            raise ValueError("series: a Forecaster is measured on its series; give one (the command line's --data FILE: "
                             "its values, a column a feature)")
        if model.calendar:
            raise ValueError("model: a Forecaster with calendar features needs its series' times; measure it in Python")
        losses, seconds = timed(lambda m: forecaster_held_out_error(m, series))
        what = "held-out forecast error (mean absolute, the series' units) from the last 10% of its origins"
    elif isinstance(model, AttentionClassifier):
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, model.embedding.params["weight"].shape[0], (32, 50))
        lengths = rng.integers(1, 51, 32)
        p = model.predict(ids, lengths)[0]
        seconds = {"float": median_time(lambda: model.predict(ids, lengths), 10),
                   "quantized": median_time(lambda: quantized.predict(ids, lengths), 10)}
        losses = {"float": 0.0, "quantized": float(np.sqrt(np.mean((quantized.predict(ids, lengths)[0] - p) ** 2)))}
        what = "predict on 32 random token sequences (T up to 50); loss: RMS difference from the float probabilities"
    elif isinstance(model, LSTM):
        x = np.random.default_rng(seed).standard_normal((100, 1, model.input_size)).astype(model.dtype)
        y = model(x)[0]
        seconds = {"float": median_time(lambda: model(x), 20), "quantized": median_time(lambda: quantized(x), 20)}
        losses = {"float": 0.0, "quantized": float(np.sqrt(np.mean((quantized(x)[0] - y) ** 2)))}
        what = "one call on a random sequence (T=100, B=1); loss: RMS difference from the float output"
    else:
        raise TypeError(f"model: quantize_report measures an LSTM, CharLM, Forecaster or AttentionClassifier, got "
                        f"{type(model).__name__}")
    report = QuantizeReport(scheme, float_bytes, qlstm.nbytes, seconds["float"], seconds["quantized"], what,
                            losses["float"], losses["quantized"])
    return quantized, report
