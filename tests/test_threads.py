"""Threads: the thread setting, the GIL released during compute, results independent of the
thread count (bitwise), concurrent calls, and our BLAS kept single-threaded."""

import contextlib
import os
import threading
import time

import numpy as np
import pytest

import lstmcpp
from lstmcpp import _core

from conftest import ISAS, rel_err, core_settings, on_one_and_two_threads, assert_bitwise_equal, run_forward_backward


def test_threads_setting():
    n = lstmcpp.get_num_threads()
    try:
        lstmcpp.set_num_threads(1)
        assert lstmcpp.get_num_threads() == 1
        with pytest.raises(ValueError, match="n must be >= 1"):
            lstmcpp.set_num_threads(0)
    finally:
        lstmcpp.set_num_threads(n)


def test_the_gil_is_released_during_compute():
    """While another thread is inside one long call, this thread keeps running Python: its
    iterations cover the call with no long pause. (Were the GIL held for the call, this thread
    could run only before and after it: the call's interval would hold no iteration at all.)"""
    model = lstmcpp.LSTM(256, 256, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((500, 1, 256)).astype(np.float32)
    with core_settings(threads=1):  # a call of at least 0.2 s on this CPU, whatever its speed
        begin = time.perf_counter()
        model(x)
        steps = 500 * int(np.ceil(0.2 / (time.perf_counter() - begin)))
    x = np.random.default_rng(0).standard_normal((steps, 1, 256)).astype(np.float32)
    done, call = threading.Event(), {}

    def one_long_call():
        call["begin"] = time.perf_counter()
        model(x)
        call["end"] = time.perf_counter()
        done.set()

    with core_settings(threads=1):  # the core's team must not compete with this thread for the cores
        worker = threading.Thread(target=one_long_call)
        ticks = []
        worker.start()
        while not done.is_set():
            ticks.append(time.perf_counter())
        worker.join()
    begin, end = call["begin"], call["end"]
    inside = [t for t in ticks if begin < t < end]
    longest_pause = float(np.max(np.diff([begin] + inside + [end])))
    assert end - begin > 0.05, call  # long enough for a held GIL to show
    assert longest_pause < 0.25 * (end - begin), (longest_pause, end - begin, len(inside))


def test_info_reports_the_kernels_and_threads():
    info = lstmcpp.info()
    assert info["isa"] in info["isa_supported"]
    assert info["threads"] == lstmcpp.get_num_threads()
    assert "OpenBLAS" in info["blas"]
    assert info["version"] == lstmcpp.__version__
    from lstmcpp.quantize import SCHEMES

    assert set(info["schemes"]) == {"float32", *SCHEMES}
    assert info["schemes"]["float32"].startswith(info["isa"])


def test_info_reports_the_caches_the_os_describes():
    import glob
    import os

    caches = lstmcpp.info()["caches"]
    assert set(caches) == {"L1d", "L2", "L3"} and all(v >= 0 for v in caches.values())
    described = {}
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        def read(name, index=index):
            with open(os.path.join(index, name)) as f:
                return f.read().strip()

        if read("type") != "Instruction":
            size = read("size")
            described[f"L{read('level')}" + ("d" if read("level") == "1" else "")] = \
                int(size.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(size[-1], 0)
    if not described:
        pytest.skip("the OS describes no caches here")
    assert {k: caches[k] for k in described} == described
    assert 0 < caches["L1d"] < caches["L2"]


def test_one_and_two_threads_agree():
    model = lstmcpp.LSTM(64, 128, num_layers=2, bidirectional=True, proj_size=96, peepholes=True, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 8, 64)).astype(np.float32)
    lengths = rng.integers(1, 21, size=8)
    dy = rng.standard_normal((20, 8, 192)).astype(np.float32)
    one, two = on_one_and_two_threads(lambda: run_forward_backward(model, x, dy, lengths))
    for a, b in zip(one, two):
        assert rel_err(a, b) < 1e-6


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
    one, two = on_one_and_two_threads(lambda: run_forward_backward(model, x, dy, lengths), isa)
    assert_bitwise_equal(one, two)


@contextlib.contextmanager
def sweeps_from(n_bytes):
    """A thread whose step reads more than n_bytes of weights reads them backward every other
    step (normally: more than half of its L2)."""
    _core.set_sweep_from_bytes(n_bytes)
    try:
        yield
    finally:
        _core.set_sweep_from_bytes(-1)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("scheme", [None, "int8", "bf16", "codebook4"])
def test_weights_read_backward_every_other_step_give_the_same_results(isa, scheme):
    """Every thread reading its weights backward every other step, its gates in reverse and each
    gate's rows in parts of 128 from the last (H = 300: parts of 128 and less on one and two
    threads): whole sequences split by hidden units and by batch rows (an int8 batch projects its
    input in the step), and a stream's one-step calls, all bitwise equal to forward reads."""
    model = lstmcpp.LSTM(20, 300, num_layers=2, proj_size=150, peepholes=True, seed=6)
    q = model if scheme is None else lstmcpp.quantize(model, scheme)
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((T, B, 20)).astype(np.float32) for T, B in ((9, 1), (4, 3), (3, 40))]

    def run():
        outputs = []
        for x in xs:
            y, (h, c) = q(x)
            outputs += [y, h, c]
        s = q.stream()
        outputs += [s.step(x_t[0]).copy() for x_t in xs[0]]
        return outputs

    for threads in (1, 2):
        with core_settings(threads=threads, isa=isa, whole_team=True):
            with sweeps_from(1 << 40):
                forward = run()
            with sweeps_from(0):
                alternating = run()
        assert_bitwise_equal(forward, alternating)


@contextlib.contextmanager
def starving_team():
    """Every wait at a step's barrier counts as starvation: a time loop's team gives its call to
    one thread at the first step where a thread waits (as when another process takes a core)."""
    _core.set_starvation_patience(0)
    try:
        yield
    finally:
        _core.set_starvation_patience(-1)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("scheme", [None, "int8", "codebook4"])
def test_a_starved_team_finishes_on_one_thread_with_the_same_results(isa, scheme):
    """Splitting by hidden units (a barrier each step), projection (a second barrier), lengths,
    both directions, training's forward (its cache) and inference: the results of a call that a
    starved team handed to one thread mid-way equal those of one thread throughout, bitwise."""
    model = lstmcpp.LSTM(29, 53, num_layers=2, bidirectional=True, peepholes=True, proj_size=27, seed=1)
    q = model if scheme is None else lstmcpp.quantize(model, scheme)
    rng = np.random.default_rng(3)
    # A quantized model this small splits a batch of two or more by rows (its weights fit in half
    # of any L2, so each thread runs whole steps with no barrier to starve at): one sequence.
    B = 3 if scheme is None else 1
    x = rng.standard_normal((40, B, 29)).astype(np.float32)
    lengths = rng.integers(1, 41, size=B)

    def run():
        y, (h, c) = q(x, lengths=lengths)
        outputs = [y, h, c]
        if scheme is None:
            y2, (h2, c2), _ = model.forward(x, lengths=lengths)
            outputs += [y2, h2, c2]
        return outputs

    with core_settings(threads=1, isa=isa, whole_team=True):
        alone = run()
    before = _core.starved_calls()
    with core_settings(threads=2, isa=isa, whole_team=True), starving_team():
        starved = run()
        assert _core.starved_calls() > before  # the fallback ran
        _core.set_starvation_patience(0)  # (forgets the whiles of one thread that run started)
        q(x, lengths=lengths)
        assert _core.team_starved_for() > 0  # and the calls that follow soon (10 ms) run on one thread
    assert not _core.team_recently_starved()  # the switch put back forgets it
    assert_bitwise_equal(alone, starved)


@pytest.mark.parametrize("scheme", [None, "int8"])
def test_stream_steps_leave_a_slow_worker(scheme):
    """A stream's steps time their team against one thread: with the worker slowed by ten steps'
    time on one thread a share (200 us at least; as on a core it shares), they soon run on one
    thread; with the times forgotten, a new shape's first calls take the team; with the switch
    off, every call does. The outputs equal one thread's, bitwise, whichever way each step ran."""
    model = lstmcpp.LSTM(192, 192, seed=6)  # a step of 295k multiply-adds: a team of two, int8 too
    q = model if scheme is None else lstmcpp.quantize(model, scheme)
    x = np.random.default_rng(7).standard_normal((60, 192)).astype(np.float32)

    def steps():
        s = q.stream()
        return [s.step(x_t).copy() for x_t in x]

    with core_settings(threads=1):
        started = time.perf_counter()
        alone = steps()
        per_step = (time.perf_counter() - started) / len(x)  # (a sanitizer's build is far slower)
    with core_settings(threads=2):
        _core.set_worker_delay(int(max(200e-6, 10 * per_step) * 1e9))
        try:
            before = _core.steps_alone()
            slowed = steps()
            assert _core.steps_alone() - before >= 30  # from the first probe on (after 16 calls), nearly all
            s, rests = q.stream(), _core.worker_rests()
            s.step(x[0])
            assert _core.worker_rests() > rests  # the worker sleeps beside a call alone (told at its start and end)
        finally:
            _core.set_worker_delay(0)
        _core.set_step_tuning(True)  # forget the times
        before = _core.steps_alone()
        s = q.stream()
        for x_t in x[:16]:
            s.step(x_t)
        assert _core.steps_alone() == before  # no probe before the team is timed
        assert not _core.workers_told_to_rest()  # a team call keeps its worker awake for the next
        _core.set_step_tuning(False)
        team = steps()
        assert _core.steps_alone() == before  # the switch off: always the team
    assert_bitwise_equal(alone, slowed)
    assert_bitwise_equal(alone, team)


def test_a_team_starved_again_soon_runs_alone_twice_as_long():
    """Teams run alone 10 ms after a starved call; starved again right after that while, 20 ms, then
    40, 80 and at most 160 ms; once forgotten (the switch set again), 10 ms again."""
    model = lstmcpp.LSTM(4, 32, seed=2)  # small (a sanitizer's build is slow), on the whole team
    x = np.random.default_rng(2).standard_normal((5, 1, 4)).astype(np.float32)
    with core_settings(threads=2, whole_team=True), starving_team():
        seen = []
        for _ in range(6):
            while _core.team_recently_starved():
                pass
            model(x)  # its team starves at its first wait
            seen.append(round(_core.team_starved_for(), 6))
        assert seen == [0.01, 0.02, 0.04, 0.08, 0.16, 0.16]
        _core.set_starvation_patience(0)
        assert _core.team_starved_for() == 0 and not _core.team_recently_starved()
        model(x)
        assert round(_core.team_starved_for(), 6) == 0.01


@contextlib.contextmanager
def absent_workers():
    """No worker joins a team that can run without it (as when NumPy's BLAS threads hold their
    cores): the calling thread does the whole of every product, pool step and time loop."""
    _core.set_workers_absent(True)
    try:
        yield
    finally:
        _core.set_workers_absent(False)
        _core.set_starvation_patience(-1)  # forget the starvation the teams that ran alone marked


@pytest.mark.parametrize("scheme", [None, "int8", "bf16", "codebook4"])
def test_the_caller_does_the_work_of_workers_that_never_start(scheme):
    """Time loops split by hidden units (which start alone), by batch rows and single steps (the
    caller does the worker's share after its own), the products of whole sequences, and a pool's
    chunks: with every worker absent, the results equal those of one thread, bitwise."""
    model = lstmcpp.LSTM(24, 80, num_layers=2, proj_size=40, peepholes=True, seed=5)
    q = model if scheme is None else lstmcpp.quantize(model, scheme)
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((T, B, 24)).astype(np.float32) for T, B in ((300, 1), (7, 40), (1, 3), (1, 1))]
    ids, x_pool = np.arange(0, 200, 3), rng.standard_normal((67, 24)).astype(np.float32)

    def fresh():  # (a team that ran alone is taken as starved, and the next calls run on one thread)
        _core.set_starvation_patience(-1)

    def run():
        outputs = []
        for x in xs:
            fresh()
            y, (h, c) = q(x)
            outputs += [y, h, c]
        pool = q.stream_pool(200)
        for _ in range(3):
            fresh()
            outputs.append(pool.step(ids, x_pool))
        return outputs

    with core_settings(threads=1, whole_team=True):
        alone = run()
    with core_settings(threads=2, whole_team=True), absent_workers():
        before = _core.starved_calls()
        without = run()
        assert _core.starved_calls() > before  # the time loops split by units ran alone
    assert_bitwise_equal(alone, without)
    with core_settings(threads=2, whole_team=True):
        assert_bitwise_equal(alone, run())  # and the workers are back


def test_a_forked_child_starts_its_own_workers():
    """The parent's workers do not exist in a child it forks: the child's teams start their own."""
    model = lstmcpp.LSTM(16, 64, seed=0)
    x = np.random.default_rng(0).standard_normal((50, 2, 16)).astype(np.float32)
    with core_settings(threads=2, whole_team=True):
        expected = model(x)[0]  # (the parent's workers now exist)
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                ok = np.array_equal(model(x)[0], expected)
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


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

    one, two = on_one_and_two_threads(run, isa)
    assert_bitwise_equal(one, two)


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
