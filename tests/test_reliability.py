"""Determinism, concurrency, soak and numerical robustness of the C++ core."""

import os
import threading

import numpy as np
import pytest

import lstmcpp
from lstmcpp import _core

from conftest import ISAS, rel_err


def run_forward_backward(model, x, dy, lengths=None, state=None):
    model.zero_grad()
    y, (h, c), cache = model.forward(x, state, lengths=lengths)
    dx, (dh0, dc0) = model.backward(cache, dy)
    return [y, h, c, dx, dh0, dc0] + [g.copy() for g in model.grads.values()]


def assert_bitwise_equal(a_list, b_list):
    for a, b in zip(a_list, b_list):
        assert a.shape == b.shape
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("B", [1, 5])
def test_repeated_calls_are_bitwise_identical(B):
    model = lstmcpp.LSTM(13, 37, num_layers=2, bidirectional=True, peepholes=True, proj_size=21, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, B, 13)).astype(np.float32)
    dy = rng.standard_normal((11, B, 42)).astype(np.float32)
    first = run_forward_backward(model, x, dy)
    for _ in range(3):
        assert_bitwise_equal(run_forward_backward(model, x, dy), first)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("B,T", [(1, 12), (3, 12), (8, 20), (19, 9)])
def test_results_are_bitwise_identical_across_thread_counts(isa, B, T):
    """Each output element is computed by the same kernel in the same order, whatever the split:
    weights read in place (B = 1, 3), packed and split by hidden units (B = 8), packed and split
    by batch rows (B = 19)."""
    model = lstmcpp.LSTM(29, 53, num_layers=2, peepholes=True, proj_size=27, seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, 29)).astype(np.float32)
    dy = rng.standard_normal((T, B, 27)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    one, two = on_one_and_two_threads(isa, lambda: run_forward_backward(model, x, dy, lengths))
    assert_bitwise_equal(one, two)


def on_one_and_two_threads(isa, run):
    """run() under the kernels of `isa`, with 1 and then 2 threads on every time loop."""
    threads, before = lstmcpp.get_num_threads(), _core.isa_in_use()
    results = []
    try:
        _core.set_isa(isa)
        _core.set_min_work_per_thread(1)
        for n in (1, 2):
            lstmcpp.set_num_threads(n)
            results.append(run())
    finally:
        lstmcpp.set_num_threads(threads)
        _core.set_min_work_per_thread(65536)
        _core.set_isa(before)
    return results


@pytest.mark.parametrize("isa", ISAS)
def test_token_input_is_bitwise_identical_across_thread_counts(isa):
    model = lstmcpp.LSTM(16, 48, bidirectional=True, seed=2)
    rng = np.random.default_rng(2)
    ids, table = rng.integers(0, 7, (30, 19)), rng.standard_normal((7, 16)).astype(np.float32)
    dy = rng.standard_normal((30, 19, 96)).astype(np.float32)

    def run():
        model.zero_grad()
        y, (h, c), cache = model.forward_tokens(ids, table)
        d_table, (dh0, dc0) = model.backward(cache, dy)
        return [y, h, c, d_table, dh0, dc0] + [g.copy() for g in model.grads.values()]

    one, two = on_one_and_two_threads(isa, run)
    assert_bitwise_equal(one, two)


# ------------------------------------------------------------------------------------------------
# concurrency


def test_eight_threads_on_shared_and_separate_models_match_serial_results():
    rng = np.random.default_rng(0)
    shared = lstmcpp.LSTM(16, 48, num_layers=2, seed=0)
    own = [lstmcpp.LSTM(16, 48, peepholes=True, seed=k) for k in range(8)]
    xs = [rng.standard_normal((20, 3, 16)).astype(np.float32) for _ in range(8)]
    dys = [rng.standard_normal((20, 3, 48)).astype(np.float32) for _ in range(8)]
    expected_shared = [shared(x)[0] for x in xs]
    expected_own = [run_forward_backward(m, x, dy) for m, x, dy in zip(own, xs, dys)]
    for m in own:
        m.zero_grad()
    results, errors = {}, []
    start = threading.Barrier(8)

    def work(k):
        try:
            start.wait()
            for _ in range(5):
                y_shared = shared(xs[k])[0]  # inference on one model from all threads at once
                results[k] = (y_shared, run_forward_backward(own[k], xs[k], dys[k]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(8):
        assert np.array_equal(results[k][0], expected_shared[k])
        assert_bitwise_equal(results[k][1], expected_own[k])


def test_concurrent_backward_on_one_model_raises_instead_of_corrupting():
    model = lstmcpp.LSTM(64, 256, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 16, 64)).astype(np.float32)
    y, _, cache = model.forward(x)
    dy = np.ones_like(y)
    model.zero_grad()
    model.backward(cache, dy)
    one = {k: g.copy() for k, g in model.grads.items()}
    model.zero_grad()
    outcomes = []
    start = threading.Barrier(4)

    def work():
        start.wait()
        for _ in range(3):
            try:
                model.backward(cache, dy)
                outcomes.append("ok")
            except RuntimeError as e:
                assert "another thread is running backward" in str(e)
                outcomes.append("refused")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "refused" in outcomes  # four threads started together: they did collide
    done = outcomes.count("ok")
    for k, g in model.grads.items():  # the successful calls' sum (to float32 rounding): nothing corrupted
        assert rel_err(g, done * one[k]) < 1e-6, k


# ------------------------------------------------------------------------------------------------
# soak


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def thread_count():
    return len(os.listdir("/proc/self/task"))


UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_soak_small_calls_and_training_steps_keep_memory_and_threads_flat():
    model = lstmcpp.LSTM(8, 16, seed=0)
    x = np.ones((1, 1, 8), np.float32)
    state = None
    for _ in range(2000):  # warm up: allocator pools, thread team
        _, state = model(x, state)
    rss0, threads0 = rss_mib(), thread_count()
    for _ in range(100_000):
        _, state = model(x, state)
    calls_growth = rss_mib() - rss0

    train = lstmcpp.LSTM(8, 32, num_layers=2, seed=0)
    xb = np.random.default_rng(0).standard_normal((20, 4, 8)).astype(np.float32)
    for _ in range(50):
        _, _, cache = train.forward(xb)
        train.backward(cache, np.ones((20, 4, 32), np.float32))
    rss1 = rss_mib()
    for _ in range(1000):
        _, _, cache = train.forward(xb)
        train.backward(cache, np.ones((20, 4, 32), np.float32))
    steps_growth = rss_mib() - rss1
    assert thread_count() <= threads0 + 1, (threads0, thread_count())
    if UNDER_ASAN:
        pytest.skip("ASan's quarantine holds freed memory, so RSS grows; its leak check covers this run")
    assert calls_growth < 8, f"100,000 calls grew RSS by {calls_growth:.1f} MiB"
    assert steps_growth < 8, f"1,000 training steps grew RSS by {steps_growth:.1f} MiB"


# ------------------------------------------------------------------------------------------------
# numerical robustness


def test_huge_tiny_and_denormal_inputs_give_finite_results():
    model = lstmcpp.LSTM(4, 8, peepholes=True, seed=0)
    for value in (1e30, -1e30, 3e38, 1e-30, 1e-42, -1e-42, 0.0):  # 1e-42 is denormal in float32
        x = np.full((5, 2, 4), value, np.float32)
        y, (h, c), cache = model.forward(x)
        dx, _ = model.backward(cache, np.ones_like(y))
        for a in (y, h, c, dx):
            assert np.isfinite(a).all(), value
        assert np.abs(y).max() <= 1.0 and np.abs(c).max() <= 5.0  # |h| < 1; each step adds at most 1 to |c|


def test_nan_and_inf_propagate_only_where_they_flow_and_check_finite_raises():
    model = lstmcpp.LSTM(4, 8, seed=0)
    x = np.zeros((6, 3, 4), np.float32)
    x[2, 1, 0] = np.nan
    x[4, 2, 3] = np.inf
    y, (h, c) = model(x)
    assert np.isnan(y[2:, 1]).all() and not np.isnan(y[:2, 1]).any()
    assert np.isfinite(y[:, 0]).all()  # other batch elements untouched
    checked = lstmcpp.LSTM(4, 8, seed=0, check_finite=True)
    with pytest.raises(FloatingPointError, match="x: holds NaN or Inf"):
        checked(x)
    with pytest.raises(FloatingPointError, match="x: holds NaN or Inf"):
        checked.forward(x)
    y, _, cache = checked.forward(np.zeros((6, 3, 4), np.float32))
    with pytest.raises(FloatingPointError, match="dy: holds NaN or Inf"):
        checked.backward(cache, np.full_like(y, np.nan))


def test_a_sequence_of_100000_steps():
    model = lstmcpp.LSTM(3, 8, seed=0, dtype="float64")
    rng = np.random.default_rng(0)
    T = 100_000
    x = rng.standard_normal((T, 2, 3))
    y, (h, c), cache = model.forward(x, lengths=np.array([T, T - 12345]))
    dx, (dh0, dc0) = model.backward(cache, np.ones_like(y))
    assert np.isfinite(dx).all() and np.isfinite(dh0).all()
    # the same sequence in chunks, the state carried, ends in the same state
    state = None
    for k in range(0, T, 25_000):
        _, state = model(x[k : k + 25_000, :1], state)
    assert rel_err(state[0][:, 0], h[:, 0]) < 1e-12 and rel_err(state[1][:, 0], c[:, 0]) < 1e-12
    assert not y[T - 12345 :, 1].any()


def test_our_blas_stays_single_threaded_when_others_change_it():
    """threadpoolctl's "limit all BLAS" (as scikit-learn uses it) reaches our OpenBLAS copy too;
    the core must put it back to one thread (one per team member), or it nests thread pools."""
    import ctypes

    scipy_openblas32 = pytest.importorskip("scipy_openblas32")
    lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"))
    model = lstmcpp.LSTM(32, 64, seed=0)
    x = np.random.default_rng(0).standard_normal((30, 20, 32)).astype(np.float32)
    expected = run_forward_backward(model, x, np.ones((30, 20, 64), np.float32))
    lib.scipy_openblas_set_num_threads(2)
    got = run_forward_backward(model, x, np.ones((30, 20, 64), np.float32))
    assert lib.scipy_openblas_get_num_threads() == 1
    assert_bitwise_equal(got, expected)
