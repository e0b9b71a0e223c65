"""The benchmark's peers compute the same thing as lstmcpp (else its ratios would mean nothing)."""

import numpy as np
import pytest

import lstmcpp
from lstmcpp import bench

from conftest import rel_err


def test_onnx_peer_computes_the_same_lstm():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    case = bench.Case("tiny", "infer", 5, 3, 8)
    model = lstmcpp.LSTM(8, 8, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3, 8)).astype(np.float32)
    y, h, c = bench._onnxruntime_peer(case, model, x, None, threads=1)["onnxruntime"]()
    ours, (h_n, c_n) = model(x)
    assert rel_err(y, ours) < 1e-5 and rel_err(h, h_n) < 1e-5 and rel_err(c, c_n) < 1e-5


def test_quick_case_runs_and_reports_ratios():
    case = bench.Case("tiny", "infer", 5, 1, 16, peers_only=["numpy reference"])
    r = bench.run_case(case, threads=1, min_seconds=0.0, block_seconds=0.01, settle_seconds=0.0)
    assert r["median_s"]["lstmcpp"] > 0 and r["ratio"]["numpy reference"] > 0
    assert "tiny" in bench.format_table([r], gemm_gflops=100.0)


def test_the_variants_inference_rows_time_every_variant_in_both_schemes():
    r = bench.cell_variants_inference(threads=1, min_seconds=0.0, T=3, H=16, block_seconds=0.01, settle_seconds=0.0)
    assert set(r["median_s"]) == {f"{name} {scheme}" for name in bench.VARIANTS for scheme in ("float32", "int8")}
    assert all(t > 0 for t in r["median_s"].values())
