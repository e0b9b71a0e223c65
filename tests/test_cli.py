"""The command line: every command's help, and each command run end to end."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lstmcpp", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_cli_help_for_every_command():
    for command in ["demo", "train-charlm", "generate", "forecast", "quantize", "check", "bench", "compare-cells",
                    "gradient-flow", "info"]:
        out = run_cli(command, "--help")
        assert out.returncode == 0 and "usage" in out.stdout, (command, out.stderr)


def test_cli_demo_train_and_generate(tmp_path):
    out = run_cli("demo", "--seconds", "3", "--hidden", "32", "--embedding", "8", "--max-chars", "200000",
                  "--generate", "50", "--out", str(tmp_path / "lm.npz"), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "unigram baseline" in out.stdout and "saved the model" in out.stdout
    gen = run_cli("generate", str(tmp_path / "lm.npz"), "--prompt", "import ", "-n", "30", "--seed", "1")
    assert gen.returncode == 0 and gen.stdout.startswith("import ") and len(gen.stdout) >= 30, gen.stderr
    text = tmp_path / "text.txt"
    text.write_text("hello world, hello lstm. " * 400)
    out = run_cli("train-charlm", str(text), "--seconds", "2", "--hidden", "16", "--embedding", "4", "--batch", "4",
                  "--seq-len", "20", "--out", str(tmp_path / "mine.npz"), "--prompt", "hello", "--no-progress")
    assert out.returncode == 0 and (tmp_path / "mine.npz").exists(), out.stderr
    out = run_cli("quantize", str(tmp_path / "mine.npz"), "--scheme", "int8", "-o", str(tmp_path / "mine_int8.npz"),
                  "--data", str(text))
    assert out.returncode == 0, out.stderr
    assert "LSTM matrices:" in out.stdout and "held-out loss" in out.stdout and "speed" in out.stdout, out.stdout
    gen = run_cli("generate", str(tmp_path / "mine_int8.npz"), "--prompt", "hello", "-n", "20", "--seed", "1")
    assert gen.returncode == 0 and gen.stdout.startswith("hello"), gen.stderr


def test_cli_forecast_writes_a_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_cli("forecast", "--dataset", "goog", "--epochs", "2", "--hidden", "8", "--plot", str(tmp_path / "f.png"),
                  "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "naive last-value forecast" in out.stdout and (tmp_path / "f.png").stat().st_size > 1000
    csv = tmp_path / "s.csv"
    csv.write_text("day,close\n" + "\n".join(f"{k},{np.sin(2 * np.pi * k / 12) + 0.01 * k:.4f}" for k in range(300)))
    out = run_cli("forecast", "--csv", str(csv), "--column", "close", "--horizon", "4", "--window", "24",
                  "--seconds", "3", "--plot", str(tmp_path / "g.png"), "--no-progress")
    assert out.returncode == 0 and (tmp_path / "g.png").exists(), out.stderr
    assert "season 12" in out.stdout and "| Forecaster |" in out.stdout and "| same season ago |" in out.stdout
    out = run_cli("forecast", "--csv", str(csv), "--column", "nope", "--plot", str(tmp_path / "h.png"))
    assert out.returncode == 2 and "no column 'nope'" in out.stderr


@pytest.mark.skipif(not (importlib.util.find_spec("statsmodels") and importlib.util.find_spec("vega_datasets")
                         and importlib.util.find_spec("matplotlib")), reason='needs pip install "lstmcpp[forecast]"')
def test_cli_forecast_compares_with_the_classical_methods(tmp_path):
    out = run_cli("forecast", "--dataset", "elnino", "--seconds", "2", "--hidden", "8", "--plot",
                  str(tmp_path / "e.png"), "--no-progress")
    assert out.returncode == 0, out.stderr
    for method in ("Forecaster", "last value", "same season ago", "Holt-Winters"):
        assert f"| {method} |" in out.stdout
    assert "interval held" in out.stdout and (tmp_path / "e.png").stat().st_size > 1000


def test_check_command_runs():
    out = subprocess.run([sys.executable, "-m", "lstmcpp", "check", "--steps", "20", "--hidden", "32", "--batch", "4"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "matches the NumPy reference" in out.stdout


def test_cli_quantize_an_lstm_and_refuse_other_models(tmp_path):
    import lstmcpp

    lstmcpp.save(lstmcpp.LSTM(8, 16, seed=0), tmp_path / "lstm.npz")
    out = run_cli("quantize", str(tmp_path / "lstm.npz"), "-o", str(tmp_path / "q.npz"))
    assert out.returncode == 0 and "RMS difference" in out.stdout, out.stderr
    assert type(lstmcpp.load(tmp_path / "q.npz")) is lstmcpp.QuantizedLSTM
    out = run_cli("quantize", str(tmp_path / "q.npz"), "-o", str(tmp_path / "qq.npz"))
    assert out.returncode == 2 and "model:" in out.stderr


def test_cli_quantizes_a_forecaster_on_its_series_and_an_attention_classifier(tmp_path):
    """A Forecaster's held-out forecast error before and after, on the series --data gives (a
    header line skipped); without one it says what it needs. An AttentionClassifier on random
    token sequences. Each quantized model is saved and loads with its class."""
    import lstmcpp

    series = np.sin(np.arange(600) / 8.0) + 0.05 * np.random.default_rng(0).standard_normal(600)
    fc = lstmcpp.models.Forecaster(window=24, horizon=4, hidden_size=16, seed=0)
    fc.fit(series, epochs=2, progress=False, log=None)
    lstmcpp.save(fc, tmp_path / "fc.npz")
    (tmp_path / "series.csv").write_text("value\n" + "\n".join(f"{v:.6f}" for v in series))
    out = run_cli("quantize", str(tmp_path / "fc.npz"), "-o", str(tmp_path / "fc_int8.npz"), "--data",
                  str(tmp_path / "series.csv"))
    assert out.returncode == 0, out.stderr
    assert "held-out forecast error" in out.stdout and "LSTM matrices:" in out.stdout
    from lstmcpp.tasks import forecaster_held_out_error

    error = forecaster_held_out_error(fc, series)
    assert f"loss {error:.4f} -> " in out.stdout
    loaded = lstmcpp.load(tmp_path / "fc_int8.npz")
    assert type(loaded) is lstmcpp.models.Forecaster and type(loaded.lstm) is lstmcpp.QuantizedLSTM
    out = run_cli("quantize", str(tmp_path / "fc.npz"), "-o", str(tmp_path / "x.npz"))
    assert out.returncode == 2 and "a Forecaster is measured on its series" in out.stderr
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    out = run_cli("quantize", str(tmp_path / "fc.npz"), "-o", str(tmp_path / "x.npz"), "--data", str(tmp_path / "bad.csv"))
    assert out.returncode == 2 and "expected numbers" in out.stderr

    ac = lstmcpp.models.AttentionClassifier(vocab_size=30, num_classes=3, embedding_dim=8, hidden_size=48,
                                            attention_dim=8, seed=0)
    lstmcpp.save(ac, tmp_path / "ac.npz")
    out = run_cli("quantize", str(tmp_path / "ac.npz"), "--scheme", "bf16", "-o", str(tmp_path / "ac_bf16.npz"))
    assert out.returncode == 0 and "RMS difference from the float probabilities" in out.stdout, out.stderr
    assert type(lstmcpp.load(tmp_path / "ac_bf16.npz")) is lstmcpp.models.AttentionClassifier


def test_cli_trains_each_cell_and_compares_them(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("hello world, hello lstm. " * 400)
    for cell in ["layernorm", "cifg", "mogrifier"]:
        out = run_cli("train-charlm", str(text), "--cell", cell, "--seconds", "1", "--hidden", "16", "--embedding", "4",
                      "--batch", "4", "--seq-len", "20", "--out", str(tmp_path / f"{cell}.npz"), "--no-progress", "--prompt", "hello",
                      "--generate", "10")
        assert out.returncode == 0 and f"{cell} 16 x 1" in out.stdout, out.stderr
        gen = run_cli("generate", str(tmp_path / f"{cell}.npz"), "--prompt", "hello", "-n", "10", "--seed", "1")
        assert gen.returncode == 0 and gen.stdout.startswith("hello"), gen.stderr
    out = run_cli("compare-cells", "--seconds", "1", "--hidden", "16", "--max-chars", "100000", "--cells", "lstm",
                  "cifg", "--plot", str(tmp_path / "cells.png"))
    assert out.returncode == 0, out.stderr
    assert "| lstm |" in out.stdout and "| cifg |" in out.stdout
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "cells.png").stat().st_size > 1000


def test_cli_gradient_flow(tmp_path):
    out = run_cli("gradient-flow", "--steps", "30", "--hidden", "16", "--plot", str(tmp_path / "flow.png"))
    assert out.returncode == 0, out.stderr
    rows = {line[:24].strip(): [float(v) for v in line[24:].split()] for line in out.stdout.splitlines()[2:8]}
    assert set(rows) == {"tanh RNN", "LSTM", "LSTM, forget bias 1", "layer-norm LSTM", "CIFG", "Mogrifier (5 rounds)"}
    # the notes' picture: the forget gate's carousel carries the gradient back further than tanh
    assert rows["LSTM, forget bias 1"][0] > 1e3 * rows["tanh RNN"][0]
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "flow.png").stat().st_size > 1000
