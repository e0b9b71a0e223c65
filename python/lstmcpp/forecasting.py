"""What a forecaster is measured against (issue 14): real series that ship with vega-datasets and
statsmodels, the seasonal period read off a series' autocorrelation, the classical baselines
(last value, same season ago, Holt-Winters) and the rolling-origin evaluation over a series'
last part. vega-datasets and statsmodels are optional: ``pip install "lstmcpp[forecast]"``.

>>> from lstmcpp import forecasting
>>> task = forecasting.load_task("seattle-temps")
>>> forecasting.evaluate(task, forecasting.seasonal_naive(task.season))
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Dict, Optional

import numpy as np

from .interop._common import require

__all__ = ["Task", "TASKS", "load_task", "CALENDAR", "calendar_features", "future_times", "detect_season", "rolling_origins", "evaluate", "BASELINES",
           "baseline_forecasts", "last_value", "seasonal_naive", "seasonal_difference_persistence", "holt_winters"]

# A forecast method: (history (n,), horizon) -> the next `horizon` values.
Method = Callable[[np.ndarray, int], np.ndarray]


@dataclasses.dataclass
class Task:
    """A series and how it is forecast: ``horizon`` values ahead from ``window`` values of history,
    with seasonal period ``season`` (0: none), at rolling origins over the last ``test_fraction``."""

    name: str
    series: np.ndarray
    horizon: int
    window: int
    season: int
    unit: str
    trend: bool = False
    test_fraction: float = 0.2
    times: Optional[np.ndarray] = None  # (N,) datetime64[s], when the series has them


# name -> (loader, horizon, window, season, unit, trend). The seasons are the series' known
# periods (detect_season finds the same ones, tested).
TASKS: Dict[str, tuple] = {
    "seattle-temps": ("vega:seattle-temps:temp", 24, 168, 24, "°F", False),        # hourly, a day ahead
    "seattle-weather": ("vega:seattle-weather:temp_max", 7, 56, 365, "°C", False),  # daily, a week ahead
    "sunspots": ("statsmodels:sunspots:SUNACTIVITY", 5, 44, 11, "sunspots", False),  # yearly
    "elnino": ("statsmodels:elnino", 12, 60, 12, "°C", False),                       # monthly, a year ahead
}


def load_task(name: str) -> Task:
    """One of :data:`TASKS`, its series loaded from the package that ships it."""
    if name not in TASKS:
        raise ValueError(f"name: expected one of {list(TASKS)}, got {name!r}")
    source, horizon, window, season, unit, trend = TASKS[name]
    kind, *rest = source.split(":")
    if kind == "vega":
        require("vega_datasets", '"lstmcpp[forecast]"')
        from vega_datasets import local_data

        dataset, column = rest
        table = local_data(dataset)
        series = table[column].to_numpy(np.float64)
        times = table["date"].to_numpy().astype("datetime64[s]")
    else:
        sm = require("statsmodels.api", '"lstmcpp[forecast]"')
        if rest[0] == "elnino":  # one row per year, a column per month
            table = sm.datasets.elnino.load_pandas().data
            series = table.drop(columns="YEAR").to_numpy(np.float64).ravel()
            first = f"{int(table['YEAR'].iloc[0])}-01"
            times = (np.datetime64(first, "M") + np.arange(len(series))).astype("datetime64[s]")
        else:
            dataset, column = rest
            table = getattr(sm.datasets, dataset).load_pandas().data
            series = table[column].to_numpy(np.float64)
            times = np.array([f"{int(y)}-07-01" for y in table["YEAR"]], "datetime64[s]")  # mid-year
    return Task(name, series, horizon, window, season, unit, trend, times=times)


# The calendar's cycles, each given to a model as the sine and cosine of its phase (a known-ahead
# feature: a forecast's own times are known when it is made).
CALENDAR = ("hour", "dayofweek", "dayofyear", "month")


def calendar_features(times: np.ndarray, names) -> np.ndarray:
    """``(..., 2 len(names))``: for each of ``names`` (of :data:`CALENDAR`), the sine and cosine
    of ``times``' phase in that cycle (hour of the day, day of the week, of the year, month)."""
    t = np.asarray(times).astype("datetime64[s]")
    seconds = t.astype(np.int64)
    day = 86_400
    phases = []
    for name in names:
        if name == "hour":
            phase = (seconds % day) / day
        elif name == "dayofweek":  # 1970-01-01 was a Thursday; Monday is 0
            phase = ((seconds // day + 3) % 7) / 7
        elif name == "dayofyear":
            year_start = t.astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
            phase = (seconds - year_start) / (365.2425 * day)
        elif name == "month":
            phase = (t.astype("datetime64[M]").astype(np.int64) % 12) / 12
        else:
            raise ValueError(f"calendar: expected names among {list(CALENDAR)}, got {name!r}")
        phases += [np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)]
    return np.stack(phases, axis=-1) if phases else np.zeros(t.shape + (0,))


def future_times(times: np.ndarray, steps: int) -> np.ndarray:
    """The ``steps`` times after ``times``, at its last spacing (months and years as calendar
    steps when the times fall on them, so that months of different lengths stay months)."""
    t = np.asarray(times).astype("datetime64[s]")
    if len(t) < 2:
        raise ValueError(f"times: need at least two to continue them, got {len(t)}")
    for unit in ("Y", "M"):  # whole years or months apart, at the same moment within them
        coarse = t[-2:].astype(f"datetime64[{unit}]")
        offsets = t[-2:] - coarse.astype("datetime64[s]")
        if coarse[1] > coarse[0] and offsets[0] == offsets[1]:
            return (coarse[1] + (coarse[1] - coarse[0]) * np.arange(1, steps + 1)).astype("datetime64[s]") + offsets[1]
    return t[-1] + (t[-1] - t[-2]) * np.arange(1, steps + 1)


def detect_season(series: np.ndarray, max_lag: Optional[int] = None, threshold: float = 0.2) -> int:
    """The seasonal period of ``series`` (0: none), read off two autocorrelations: of the series
    less its straight-line trend (which shows a slow season, a year of daily values) and of its
    first differences (which shows a fast one under a slow one, a day of hourly values through a
    year). In each, the candidate is the first local peak past the first fall below zero that
    reaches ``threshold`` (past that fall, the noise's bumps near lag 0 and a longer cycle's larger
    peak, El Nino's four years in monthly data, are not taken for the season); the stronger
    candidate wins. ``max_lag`` defaults to a third of the series (at most 400)."""
    y = np.asarray(series, np.float64)
    if len(y) < 8:
        return 0
    t = np.arange(len(y))
    best, best_acf = 0, -1.0
    for x in (y - np.polyval(np.polyfit(t, y, 1), t), np.diff(y)):
        lag, value = _first_seasonal_peak(x - x.mean(), max_lag, threshold)
        if lag and value > best_acf:
            best, best_acf = lag, value
    return best


def _first_seasonal_peak(x: np.ndarray, max_lag: Optional[int], threshold: float):
    """(lag, autocorrelation) of detect_season's candidate in ``x`` (zero mean), or (0, 0)."""
    n = len(x)
    max_lag = min(n // 3, 400) if max_lag is None else min(max_lag, n - 2)
    if max_lag < 3 or not np.any(x):
        return 0, 0.0
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: max_lag + 2]
    acf = acf / acf[0]
    below = np.flatnonzero(acf[1:] < 0)
    if below.size == 0:
        return 0, 0.0
    for k in range(int(below[0]) + 2, max_lag + 1):
        if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1] and acf[k] >= threshold:
            return k, float(acf[k])
    return 0, 0.0


def rolling_origins(n: int, horizon: int, window: int, test_fraction: float = 0.2) -> np.ndarray:
    """The forecast origins (each the index of the first value forecast) over the last
    ``test_fraction`` of a series of ``n`` values, ``horizon`` apart, each with ``window`` values
    of history and ``horizon`` values of truth."""
    first = max(int(n * (1 - test_fraction)), window)
    return np.arange(first, n - horizon + 1, horizon)


def evaluate(task: Task, method: Method) -> float:
    """The mean absolute error of ``method`` over ``task``'s rolling origins, each given the whole
    history before it."""
    y = task.series
    errors = [np.abs(np.asarray(method(y[:o], task.horizon)) - y[o : o + task.horizon]).mean()
              for o in rolling_origins(len(y), task.horizon, task.window, task.test_fraction)]
    return float(np.mean(errors))


BASELINES = ("last", "seasonal", "seasonal_change", "seasonal_mean")


def baseline_forecasts(histories: np.ndarray, kind: str, season: int, horizon: int,
                       seasons_averaged: int = 1) -> np.ndarray:
    """The simple methods' forecasts (B, horizon, F) from histories (B, n, F), ``kind`` one of
    :data:`BASELINES`: the last value; the same season ago; that moved by the last value's own
    seasonal difference (the seasonally differenced series' last value carried forward); the
    average of the last ``seasons_averaged`` seasons, moved to the last season's level. With no
    season, each is the last value."""
    h = np.asarray(histories)
    n = h.shape[1]
    if kind == "last" or season < 1:
        return np.repeat(h[:, -1:], horizon, axis=1)
    ahead = np.arange(horizon) % season
    if kind == "seasonal":
        return h[:, n - season + ahead]
    if kind == "seasonal_change":
        return h[:, n - season + ahead] + (h[:, -1] - h[:, n - 1 - season])[:, None]
    if kind == "seasonal_mean":
        m = seasons_averaged
        seasons = h[:, n - m * season :].reshape(len(h), m, season, -1)
        profile = seasons.mean(axis=1)
        return profile[:, ahead] + (seasons[:, -1].mean(axis=1) - profile.mean(axis=1))[:, None]
    raise ValueError(f"kind: expected one of {list(BASELINES)}, got {kind!r}")


def _one_history(kind: str, season: int) -> Method:
    """:func:`baseline_forecasts` as a method on one history (n,)."""
    return lambda history, horizon: baseline_forecasts(np.asarray(history)[None, :, None], kind, season, horizon)[0, :, 0]


def last_value() -> Method:
    return _one_history("last", 0)


def seasonal_naive(season: int) -> Method:
    """Each value as it was one season before (the last value when there is no season)."""
    return _one_history("seasonal", season)


def seasonal_difference_persistence(season: int) -> Method:
    """The same season ago, plus the difference between the last value and its own season ago:
    the last value of the seasonally differenced series carried forward."""
    return _one_history("seasonal_change", season)


def holt_winters(season: int, trend: bool = False, history_seasons: int = 28) -> Method:
    """statsmodels' Holt-Winters (additive season; additive trend when ``trend``), fitted at each
    origin on at most the last ``history_seasons`` seasons of history."""
    holtwinters = require("statsmodels.tsa.holtwinters", '"lstmcpp[forecast]"')

    def method(history, horizon):
        fit_on = history[-history_seasons * season:] if season else history[-200:]
        with warnings.catch_warnings():  # convergence chatter on short or flat pieces
            warnings.simplefilter("ignore")
            model = holtwinters.ExponentialSmoothing(fit_on, trend="add" if trend else None,
                                                     seasonal="add" if season else None,
                                                     seasonal_periods=season or None).fit()
        return np.asarray(model.forecast(horizon))
    return method
