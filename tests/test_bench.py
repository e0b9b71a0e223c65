"""The benchmark's peers compute the same thing as lstmcpp (else its ratios would mean nothing)."""

import numpy as np
import pytest

import lstmcpp
from lstmcpp import bench

from conftest import rel_err


def test_onnx_peer_computes_the_same_lstm():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = lstmcpp.LSTM(6, 8, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3, 6)).astype(np.float32)
    session = ort.InferenceSession(bench.onnx_lstm_model(model), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, 3, 8), np.float32)
    y, h, c = session.run(None, {"X": x, "initial_h": zeros, "initial_c": zeros})
    ours, (h_n, c_n) = model(x)
    assert rel_err(y[:, 0], ours) < 1e-5 and rel_err(c[0], c_n[0]) < 1e-5


def test_quick_case_runs_and_reports_ratios():
    case = bench.Case("tiny", "infer", 5, 1, 16, peers_only=["numpy reference"])
    r = bench.run_case(case, threads=1, min_seconds=0.0, block_seconds=0.01, settle_seconds=0.0)
    assert r["median_s"]["lstmcpp"] > 0 and r["ratio"]["numpy reference"] > 0
    assert "tiny" in bench.format_table([r], gemm_gflops=100.0)
