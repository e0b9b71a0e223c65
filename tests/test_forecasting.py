"""The forecasting yardstick (issue 14): seasons read off a series, the classical baselines, the
rolling origins, and the real series (vega-datasets and statsmodels; skipped without them)."""

import importlib.util

import numpy as np
import pytest

from lstmcpp import forecasting as F


def test_detect_season_on_known_series():
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    weekly = np.sin(2 * np.pi * t[:300] / 7) + 0.3 * rng.standard_normal(300) + 0.01 * t[:300]
    assert F.detect_season(weekly) == 7
    # a day of hourly values under a slow cycle that dominates the variance
    hourly = 10 * np.sin(2 * np.pi * t / 5000) + np.sin(2 * np.pi * t / 24) + 0.05 * rng.standard_normal(2000)
    assert F.detect_season(hourly) == 24
    assert F.detect_season(rng.standard_normal(500)) == 0
    assert F.detect_season(np.cumsum(rng.standard_normal(500))) == 0
    assert F.detect_season(np.ones(100)) == 0 and F.detect_season(np.arange(5.0)) == 0


def test_rolling_origins_cover_the_last_part():
    origins = F.rolling_origins(100, horizon=5, window=10, test_fraction=0.2)
    assert origins[0] == 80 and origins[-1] + 5 <= 100 and np.all(np.diff(origins) == 5)
    assert F.rolling_origins(22, horizon=3, window=18)[0] == 18  # never less history than the window
    assert F.rolling_origins(20, horizon=3, window=18).size == 0  # no room for one


def test_baselines_are_exact_where_they_should_be():
    t = np.arange(400.0)
    periodic = np.sin(2 * np.pi * t / 12)
    trending = periodic + 0.05 * t
    task = F.Task("periodic", periodic, horizon=12, window=24, season=12, unit="")
    assert F.evaluate(task, F.seasonal_naive(12)) < 1e-12
    task = F.Task("trending", trending, horizon=6, window=24, season=12, unit="")
    assert F.evaluate(task, F.seasonal_naive(12)) == pytest.approx(0.05 * 12)
    assert F.evaluate(task, F.seasonal_difference_persistence(12)) < 1e-12
    assert F.evaluate(task, F.last_value()) > 0.1
    # a horizon longer than the season repeats the last season
    np.testing.assert_array_equal(F.seasonal_naive(3)(np.arange(9.0), 7), [6, 7, 8, 6, 7, 8, 6])


def test_holt_winters_follows_a_clean_season():
    pytest.importorskip("statsmodels")
    t = np.arange(300.0)
    task = F.Task("clean", 5 + np.sin(2 * np.pi * t / 12), horizon=12, window=48, season=12, unit="")
    assert F.evaluate(task, F.holt_winters(12)) < 1e-2


@pytest.mark.skipif(not (importlib.util.find_spec("statsmodels") and importlib.util.find_spec("vega_datasets")),
                    reason='needs pip install "lstmcpp[forecast]"')
@pytest.mark.parametrize("name", list(F.TASKS))
def test_the_real_series_load_and_their_seasons_are_found(name):
    task = F.load_task(name)
    train = task.series[: int(len(task.series) * (1 - task.test_fraction))]
    assert np.isfinite(task.series).all() and len(task.series) > 4 * task.window
    found = F.detect_season(train)
    assert abs(found - task.season) <= max(1, task.season // 10), (name, found)


def test_bad_task_name():
    with pytest.raises(ValueError, match="expected one of"):
        F.load_task("nope")


# ------------------------------------------------------------------------------------------------
# Forecaster.fit


def test_fit_learns_a_noisy_season_and_keeps_the_best(tmp_path):
    import lstmcpp
    from lstmcpp.models import Forecaster

    rng = np.random.default_rng(0)
    t = np.arange(900)
    series = 10 + 0.01 * t + 3 * np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 240) + 0.1 * rng.standard_normal(900)
    train, test = series[:800], series[800:]
    fc = Forecaster(window=48, horizon=6, hidden_size=16, seed=0, quantiles=(0.1, 0.5, 0.9))
    messages = []
    info = fc.fit(train, epochs=30, progress=False, log=messages.append)
    assert info["season"] == 24 and any("season: 24" in m for m in messages)
    assert info["val_error"] <= info["baseline_error"]  # the baseline is where training starts
    task = F.Task("synthetic", series, horizon=6, window=200, season=24, unit="", test_fraction=0.1)
    ours = F.evaluate(task, lambda h, n: fc.forecast(h, n))
    assert ours < F.evaluate(task, F.seasonal_naive(24))
    point, bands = fc.forecast(train, 6, quantiles=(0.1, 0.9))
    assert point.shape == (6,) and np.all(bands[0.1] <= bands[0.9])
    # files and pickles keep every choice fit made
    lstmcpp.save(fc, tmp_path / "fc.npz")
    loaded = lstmcpp.load(tmp_path / "fc.npz")
    np.testing.assert_array_equal(loaded.forecast(train, 10), fc.forecast(train, 10))
    import pickle
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fc)).forecast(train, 10), fc.forecast(train, 10))
    assert np.isfinite(test).all()


def test_quantiles_cover_about_what_they_say():
    from lstmcpp.models import Forecaster

    rng = np.random.default_rng(1)
    series = np.cumsum(rng.standard_normal(1500))  # a random walk: the change is N(0, k) after k steps
    fc = Forecaster(window=20, horizon=1, hidden_size=8, seed=0, season=0, quantiles=(0.1, 0.9))
    fc.fit(series[:1200], epochs=15, progress=False, log=None)
    inside = []
    for o in range(1200, 1499):
        _, bands = fc.forecast(series[:o], 1, quantiles=(0.1, 0.9))
        inside.append(bands[0.1][0] <= series[o] <= bands[0.9][0])
    assert 0.65 < np.mean(inside) < 0.95


def test_fit_and_forecast_refuse_bad_input():
    from lstmcpp.models import Forecaster

    fc = Forecaster(window=10, horizon=2, hidden_size=4, seed=0, season=0)
    with pytest.raises(ValueError, match="too few"):
        fc.fit(np.arange(12.0), progress=False, log=None)
    with pytest.raises(ValueError, match="NaN"):
        fc.fit(np.r_[np.arange(50.0), np.nan], progress=False, log=None)
    with pytest.raises(ValueError, match="expected shape"):
        fc.fit(np.zeros((50, 2, 1)), progress=False, log=None)
    with pytest.raises(ValueError, match="quantiles"):
        Forecaster(quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="season"):
        Forecaster(season=-1)
    fc.fit(np.sin(np.arange(200) / 3), epochs=1, progress=False, log=None)
    with pytest.raises(ValueError, match="at least 10 values"):
        fc.forecast(np.arange(5.0), 2)
    with pytest.raises(ValueError, match="not among the model's"):
        fc.forecast(np.arange(50.0), 2, quantiles=(0.5,))


def test_a_noiseless_periodic_series_is_forecast_closely():
    from lstmcpp.models import Forecaster

    t = np.arange(600)
    series = 20 + 5 * np.sin(2 * np.pi * t / 25) + 2 * np.cos(2 * np.pi * t / 25 * 3)
    fc = Forecaster(window=50, horizon=10, hidden_size=8, seed=0)
    info = fc.fit(series[:500], epochs=5, progress=False, log=None)
    assert info["season"] == 25
    for o in (520, 555, 590):
        np.testing.assert_allclose(fc.forecast(series[:o], 10), series[o : o + 10], atol=1e-2)


# ------------------------------------------------------------------------------------------------
# calendar features


def test_calendar_features_and_future_times():
    t = np.array(["2024-01-01T06:00", "2024-07-06T18:00"], "datetime64[s]")  # a Monday; a Saturday
    f = F.calendar_features(t, ["hour", "dayofweek", "month"])
    np.testing.assert_allclose(f[0], [1, 0, 0, 1, 0, 1], atol=1e-12)  # 6 h: a quarter day; Monday; January
    np.testing.assert_allclose(f[1, :2], [-1, 0], atol=1e-12)
    np.testing.assert_allclose(f[1, 2:4], [np.sin(2 * np.pi * 5 / 7), np.cos(2 * np.pi * 5 / 7)])
    np.testing.assert_allclose(f[1, 4:], [np.sin(np.pi), np.cos(np.pi)], atol=1e-12)  # July: half a year
    assert F.calendar_features(t, []).shape == (2, 0)
    with pytest.raises(ValueError, match="calendar: expected names among"):
        F.calendar_features(t, ["week"])
    months = np.array(["2020-11-01", "2020-12-01"], "datetime64[s]")
    assert list(F.future_times(months, 3).astype("datetime64[D]").astype(str)) == ["2021-01-01", "2021-02-01", "2021-03-01"]
    years = np.array(["1999-07-01", "2000-07-01"], "datetime64[s]")  # whole years apart across a leap day
    assert list(F.future_times(years, 2).astype("datetime64[D]").astype(str)) == ["2001-07-01", "2002-07-01"]
    hours = np.array(["2020-01-31T23:00", "2020-02-01T00:00"], "datetime64[s]")
    assert list(F.future_times(hours, 2).astype(str)) == ["2020-02-01T01:00:00", "2020-02-01T02:00:00"]


def test_calendar_features_show_what_the_window_cannot(tmp_path):
    import lstmcpp
    from lstmcpp.models import Forecaster

    # hourly, flat but for a morning peak: a twelve-hour window that ends in the flat part cannot
    # tell when the next peak comes; the hour of the day can
    times = np.datetime64("2024-01-01T00:00", "s") + np.arange(24 * 60) * np.timedelta64(3600, "s")
    hour = (times.astype(np.int64) // 3600) % 24
    rng = np.random.default_rng(0)
    series = 5.0 + 4.0 * ((hour >= 8) & (hour < 12)) + 0.1 * rng.standard_normal(len(times))
    split = 24 * 50
    errors = {}
    for calendar in ((), ("hour", "dayofweek")):
        fc = Forecaster(window=12, horizon=6, hidden_size=16, seed=0, season=0, calendar=calendar)
        fc.fit(series[:split], times=times[:split] if calendar else None, epochs=250, patience=250, progress=False, log=None)
        origins = range(split, len(series) - 6, 6)
        predicted = [fc.forecast(series[:o], 6, times=times[:o] if calendar else None) for o in origins]
        errors[calendar] = np.mean([np.abs(p - series[o : o + 6]).mean() for p, o in zip(predicted, origins)])
    assert errors[("hour", "dayofweek")] < 0.5 * errors[()], errors
    # files keep the calendar; forecasts past the horizon continue the times
    lstmcpp.save(fc, tmp_path / "fc.npz")
    again = lstmcpp.load(tmp_path / "fc.npz")
    assert again.calendar == ("hour", "dayofweek")
    np.testing.assert_array_equal(again.forecast(series[:split], 30, times=times[:split]),
                                  fc.forecast(series[:split], 30, times=times[:split]))


def test_calendar_refusals():
    from lstmcpp.models import Forecaster

    with pytest.raises(ValueError, match="calendar: expected distinct names among"):
        Forecaster(calendar=("hour", "weekday"))
    fc = Forecaster(window=10, horizon=2, hidden_size=4, seed=0, season=0, calendar="hour")
    series = np.sin(np.arange(200) / 3)
    times = np.datetime64("2024-01-01", "s") + np.arange(200) * np.timedelta64(3600, "s")
    with pytest.raises(ValueError, match="times: this Forecaster reads calendar features \\['hour'\\]; pass times="):
        fc.fit(series, progress=False, log=None)
    with pytest.raises(ValueError, match=r"times: expected shape \(200,\), one per value of series, got \(199,\)"):
        fc.fit(series, times=times[:-1], progress=False, log=None)
    with pytest.raises(ValueError, match="times: expected increasing times"):
        fc.fit(series, times=times[::-1], progress=False, log=None)
    with pytest.raises(TypeError, match="times: expected datetimes"):
        fc.fit(series, times=np.arange(200.0), progress=False, log=None)
    with pytest.raises(ValueError, match="calendar: features of the calendar need Forecaster.fit"):
        fc.windows(series)
    fc.fit(series, times=times, epochs=1, progress=False, log=None)
    with pytest.raises(ValueError, match="pass times="):
        fc.forecast(series, 2)
    pytest.importorskip("onnx")
    import lstmcpp

    with pytest.raises(ValueError, match="calendar features .* cannot be exported"):
        lstmcpp.export_onnx(fc)


def test_the_linear_baseline_is_chosen_for_an_autoregressive_series(tmp_path):
    import lstmcpp
    from lstmcpp.models import Forecaster

    rng = np.random.default_rng(2)
    y = np.zeros(1200)
    for k in range(2, len(y)):  # a damped oscillation around 10, driven by noise: AR(2)
        y[k] = 10 + 1.6 * (y[k - 1] - 10) - 0.8 * (y[k - 2] - 10) + rng.standard_normal()
    fc = Forecaster(window=16, horizon=4, hidden_size=4, seed=0, season=0)
    messages = []
    info = fc.fit(y[:1000], epochs=1, progress=False, log=messages.append)
    assert info["baseline"] == "linear" and any("baseline: linear" in m and "order" in m for m in messages)
    task = F.Task("ar2", y, horizon=4, window=16, season=0, unit="", test_fraction=1 / 6)
    ours, last = F.evaluate(task, lambda h, n: fc.forecast(h, n)), F.evaluate(task, F.last_value())
    assert ours < 0.75 * last, (ours, last)
    lstmcpp.save(fc, tmp_path / "fc.npz")
    np.testing.assert_array_equal(lstmcpp.load(tmp_path / "fc.npz").forecast(y[:1000], 9), fc.forecast(y[:1000], 9))
