"""Streams and stream pools (SPEC §6): one step at a time equals the whole sequence; bad input
changes no state."""

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import lstmcpp

from conftest import core_settings, rel_err
from lstmcpp import _core


def models():
    lstm = lstmcpp.LSTM(5, 12, num_layers=2, proj_size=7, peepholes=True, cell_clip=2.0, seed=0)
    return [("float32", lstm), ("int8", lstmcpp.quantize(lstm, "int8")), ("codebook4", lstmcpp.quantize(lstm, "codebook4"))]


VARIANTS = {
    "cifg": dict(coupled_input_forget=True, peepholes=True),
    "layer_norm": dict(layer_norm=True, num_layers=2, proj_size=4),
    "mogrifier": dict(mogrify_rounds=3, mogrify_rank=2, cell_clip=1.0),
    "all": dict(layer_norm=True, coupled_input_forget=True, mogrify_rounds=4, num_layers=2),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scheme", ["float32", "int8", "bf16", "codebook4"])
def test_streams_and_pools_of_every_cell_variant_and_scheme_equal_the_whole_sequence(variant, scheme):
    """A layer-normalised or Mogrifier cell's step (whole rows a thread) and a CIFG one, float32
    and quantized: a stream's steps and a pool's equal the whole sequence."""
    lstm = lstmcpp.LSTM(5, 12, seed=1, **VARIANTS[variant])
    model = lstm if scheme == "float32" else lstmcpp.quantize(lstm, scheme)
    x = np.random.default_rng(1).standard_normal((7, 3, 5)).astype(np.float32)
    y, (h, c) = model(x)
    s = model.stream(3)
    pool = model.stream_pool(8)
    ids = np.array([6, 0, 3])
    for t in range(7):
        assert rel_err(s.step(x[t]), y[t]) < 1e-5
        assert rel_err(pool.step(ids, x[t]), y[t]) < 1e-5
    assert rel_err(s.state[0], h) < 1e-5 and rel_err(s.state[1], c) < 1e-5


@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("batch", [None, 3])
def test_a_stream_equals_the_whole_sequence(index, batch):
    _, model = models()[index]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 5) if batch is None else (9, batch, 5)).astype(np.float32)
    y, (h, c) = model(x)
    s = model.stream(batch)
    out = np.empty(y.shape[1:], np.float32)
    for t in range(9):
        if t % 2:
            got = s.step(x[t], out=out)
            assert got is out  # written in place
        else:
            got = s.step(x[t])
        assert rel_err(got, y[t]) < 1e-5
    assert rel_err(s.state[0], h) < 1e-5 and rel_err(s.state[1], c) < 1e-5
    s.reset()
    assert not s.state[0].any() and rel_err(s.step(x[0]), y[0]) < 1e-5
    s.reset((h, c))  # continue from a given state
    np.testing.assert_array_equal(s.state[0], h)


@pytest.mark.parametrize("index", range(2))
@pytest.mark.parametrize("absent", [False, True])
def test_a_stream_fed_its_own_output_in_place_steps_as_one_fed_a_copy(index, absent):
    """s.step(y, out=y) (and a pool's step with x as out): the step's threads write out while
    others still read x, and a calling thread that does an absent worker's share reads x after
    writing its own; so the core reads a copy of x when the two share memory. Equal, bit for bit,
    to feeding a copy, on two threads with the worker there and absent."""
    lstm = lstmcpp.LSTM(40, 40, seed=2)  # (two threads split its 40 units 16 and 24)
    model = lstm if index == 0 else lstmcpp.quantize(lstm, "int8")
    rng = np.random.default_rng(6)
    with core_settings(threads=2, whole_team=True):
        _core.set_workers_absent(absent)
        try:
            for batch in (None, 3):
                start = rng.standard_normal((40,) if batch is None else (batch, 40)).astype(np.float32)
                fed_copy, fed_itself = model.stream(batch), model.stream(batch)
                want, y = start.copy(), start.copy()
                for t in range(6):
                    want = fed_copy.step(want.copy())
                    assert fed_itself.step(y, out=y) is y
                    np.testing.assert_array_equal(y, want)
            ids = np.array([4, 1, 6])
            copies, itself = model.stream_pool(8), model.stream_pool(8)
            want, y = start.copy(), start.copy()
            for t in range(4):
                want = copies.step(ids, want.copy())
                assert itself.step(ids, y, out=y) is y
                np.testing.assert_array_equal(y, want)
        finally:
            _core.set_workers_absent(False)


class _Subclass(np.ndarray):
    pass


@pytest.mark.parametrize("index", range(2))
@pytest.mark.parametrize("batch", [None, 1, 3])
def test_a_step_into_out_takes_what_a_step_without_it_takes_and_refuses_the_rest(index, batch):
    """With out= given, the core checks everything itself (Stream.step checks nothing first):
    x_t converted where a step without out converts it (float64, strided, a subclass, a list),
    with the same result; a wrong shape of x_t or out (an unbatched x_t to a stream of one batch
    row and the reverse among them) or an out that is not a plain writeable float32 array is
    refused by name, and no state moves."""
    _, model = models()[index]
    rng = np.random.default_rng(3)
    shape = (5,) if batch is None else (batch, 5)
    y_shape = (7,) if batch is None else (batch, 7)
    xs = rng.standard_normal((4,) + shape).astype(np.float32)
    plain, into = model.stream(batch), model.stream(batch)
    out = np.empty(y_shape, np.float32)
    for x in [xs[0], xs[1].astype(np.float64), np.repeat(xs[2], 2, axis=-1)[..., ::2], xs[3].view(_Subclass), xs[0].tolist()]:
        want = plain.step(x)
        assert into.step(x, out=out) is out
        np.testing.assert_array_equal(out, want)
    before = into.state
    wrong_x = [np.ones((5, 1), np.float32), np.ones((2,) + shape, np.float32), np.ones(6, np.float32)]
    wrong_x.append(np.ones((1, 5), np.float32) if batch is None else np.ones(5 * batch, np.float32))
    for x in wrong_x:
        with pytest.raises(ValueError, match="x_t: expected shape"):
            into.step(x, out=out)
    read_only = np.empty(y_shape, np.float32)
    read_only.flags.writeable = False
    wrong_out = [np.empty((1,) + y_shape, np.float32), np.empty(y_shape, np.float64), read_only,
                 np.empty(y_shape, np.float32).view(_Subclass), np.empty(y_shape[:-1] + (8,), np.float32)]
    for bad in wrong_out:
        with pytest.raises(ValueError, match="out: expected a writeable float32 array"):
            into.step(xs[0], out=bad)
    for a, b in zip(into.state, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("index", range(2))
def test_a_pool_equals_separate_sequences(index):
    _, model = models()[index]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4, 5)).astype(np.float32)  # 4 streams of 6 steps
    y, (h, c) = model(x)
    pool = model.stream_pool(10)
    slots = np.array([7, 2, 9, 0])
    steps = np.zeros(4, int)
    order = [[0, 1, 2, 3], [3, 1], [0, 2], [2, 0, 1, 3], [1], [3, 2, 0], [0, 1, 2, 3], [1, 2, 3], [0], [0, 1, 2, 3],
             [0, 1, 2, 3], [3, 1, 2], [2, 3, 1, 0]]
    for chosen in order:
        chosen = [k for k in chosen if steps[k] < 6]
        if not chosen:
            continue
        got = pool.step(slots[chosen], x[steps[chosen], chosen])
        for row, k in enumerate(chosen):
            assert rel_err(got[row], y[steps[k], k]) < 1e-5
        steps[chosen] += 1
    assert (steps == 6).all()
    hs, cs = pool.state(slots)
    assert rel_err(hs, h) < 1e-5 and rel_err(cs, c) < 1e-5
    untouched = pool.state([1, 3])
    assert not untouched[0].any() and not untouched[1].any()
    pool.reset([7])
    assert not pool.state([7])[0].any() and pool.state([2])[0].any()


def test_bad_input_changes_no_state():
    _, model = models()[0]
    s = model.stream(2)
    s.step(np.ones((2, 5), np.float32))
    before = s.state
    for bad, error in [(np.ones((3, 5)), ValueError), (np.ones(5), ValueError), (np.ones((2, 5), np.complex64), TypeError)]:
        with pytest.raises(error, match="x_t"):
            s.step(bad)
    with pytest.raises(ValueError, match="out: expected a writeable float32 array of shape"):
        s.step(np.ones((2, 5)), out=np.empty((2, 3), np.float32))
    read_only = np.empty((2, 7), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writeable"):
        s.step(np.ones((2, 5)), out=read_only)
    for a, b in zip(s.state, before):
        np.testing.assert_array_equal(a, b)
    pool = model.stream_pool(4)
    pool.step([1, 2], np.ones((2, 5)))
    before = pool.state([0, 1, 2, 3])
    for ids, x, error, words in [([1, 1], np.ones((2, 5)), ValueError, "each id at most once"),
                                 ([4], np.ones((1, 5)), ValueError, r"in 0\.\.3"),
                                 ([0.5], np.ones((1, 5)), TypeError, "integers"),
                                 ([0, 1], np.ones((3, 5)), ValueError, r"x: expected shape \(2, 5\)")]:
        with pytest.raises(error, match=words):
            pool.step(ids, x)
    for a, b in zip(pool.state([0, 1, 2, 3]), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="bidirectional model cannot stream"):
        lstmcpp.LSTM(3, 4, bidirectional=True).stream()


@pytest.mark.parametrize("index", range(3))
def test_a_large_pool_steps_in_chunks_as_the_whole_batch_does(index):
    """100 streams step in chunks (32, 32, 32 and 4 of them), each chunk gathered, stepped and
    scattered by one thread of the team: every stream as in the whole batch's sequence, the same
    bits on one thread and on two, and the streams not listed untouched."""
    _, model = models()[index]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 100, 5)).astype(np.float32)
    y, (h, c) = model(x)
    slots = rng.permutation(130)[:100]
    outs = {}
    before = lstmcpp.get_num_threads()
    try:
        for threads in (1, 2):
            lstmcpp.set_num_threads(threads)
            pool = model.stream_pool(130)
            outs[threads] = [pool.step(slots, x[t]) for t in range(3)]
            hs, cs = pool.state(slots)
            assert rel_err(hs, h) < 1e-5 and rel_err(cs, c) < 1e-5
            rest = np.setdiff1d(np.arange(130), slots)
            assert not pool.state(rest)[0].any() and not pool.state(rest)[1].any()
    finally:
        lstmcpp.set_num_threads(before)
    for t in range(3):
        assert rel_err(outs[1][t], y[t]) < 1e-5
        np.testing.assert_array_equal(outs[1][t], outs[2][t])


def test_a_pool_serves_several_threads():
    _, model = models()[0]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 8, 5)).astype(np.float32)  # 8 streams, two threads with 4 each
    y, _ = model(x)
    pool = model.stream_pool(8)
    results = {}

    def serve(mine):
        results[mine] = [pool.step(list(mine), x[t, list(mine)]) for t in range(20)]

    threads = [threading.Thread(target=serve, args=(ids,)) for ids in [(0, 1, 2, 3), (4, 5, 6, 7)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mine, outs in results.items():
        for t in range(20):
            assert rel_err(outs[t], y[t, list(mine)]) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_step_takes_any_layout_of_input_and_output(dtype):
    """The in-place step reads a strided or list x_t and writes a strided out as it does
    contiguous ones (copied through its own buffer), in either dtype."""
    model = lstmcpp.LSTM(5, 6, num_layers=2, seed=3, dtype=dtype)
    x = np.random.default_rng(2).standard_normal((4, 2, 10)).astype(dtype)[:, :, ::2]  # strided steps
    y, _ = model(np.ascontiguousarray(x))
    s = model.stream(2)
    store = np.zeros((2, 12), dtype)
    for t in range(4):
        out = store[:, ::2]  # a strided out
        got = s.step(x[t] if t % 2 else x[t].tolist(), out=out)
        assert got is out
        np.testing.assert_allclose(store[:, ::2], y[t], rtol=1e-5, atol=1e-6)
        assert not store[:, 1::2].any()  # nothing written beside it


def test_a_pools_step_writes_into_out_and_refuses_a_wrong_one():
    """pool.step(ids, x, out=) returns out, holding what a step without it returns; an out of the
    wrong shape, dtype or layout, or read-only, is refused by name before any state moves."""
    model = lstmcpp.LSTM(5, 6, num_layers=2, seed=4)
    x = np.random.default_rng(5).standard_normal((3, 40, 5)).astype(np.float32)
    ids = np.arange(40)[::-1].copy()
    plain, into = model.stream_pool(50), model.stream_pool(50)
    out = np.empty((40, 6), np.float32)
    for t in range(3):
        y = plain.step(ids, x[t])
        assert into.step(ids, x[t], out=out) is out
        np.testing.assert_array_equal(out, y)
    before = into.state(np.arange(50))
    read_only = np.empty((40, 6), np.float32)
    read_only.flags.writeable = False
    for bad in [np.empty((40, 7), np.float32), np.empty((40, 6), np.float64), np.empty((6, 40), np.float32).T,
                read_only, [[0.0] * 6] * 40]:
        with pytest.raises(ValueError, match="out: expected a writeable, C-contiguous float32 array of shape"):
            into.step(ids, x[0], out=bad)
    for a, b in zip(before, into.state(np.arange(50))):
        np.testing.assert_array_equal(a, b)


def test_the_cores_pool_step_checks_what_it_is_given():
    """The core's gather-step-scatter refuses repeated or out-of-range ids and wrong dtypes itself
    (a repeated id would scatter two results into one stream), before touching any state."""
    model = lstmcpp.LSTM(5, 6, seed=0)
    h, c = np.ones((1, 4, 6), np.float32), np.ones((1, 4, 6), np.float32)
    x, out = np.ones((2, 5), np.float32), np.empty((2, 6), np.float32)
    for ids, error, words in [(np.array([1, 1]), ValueError, "at most once"), (np.array([0, 4]), ValueError, r"in 0\.\.3"),
                              (np.array([0, 1], np.int32), TypeError, "int64")]:
        with pytest.raises(error, match=words):
            model._core.pool_step(ids, x, h, c, out)
    with pytest.raises(TypeError, match="x"):
        model._core.pool_step(np.array([0, 1]), x.astype(np.float64), h, c, out)
    assert (h == 1).all() and (c == 1).all()
    model._core.pool_step(np.array([2, 0]), x, h, c, out)
    assert (h[0, [1, 3]] == 1).all() and not (h[0, [0, 2]] == 1).all()


ALLOCATION_COUNTER = r"""
#include <stddef.h>
extern void* __libc_malloc(size_t);
extern void* __libc_realloc(void*, size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_memalign(size_t, size_t);
static volatile long on = 0, count = 0;
void count_on(void) { count = 0; on = 1; }
long count_off(void) { on = 0; return count; }
static void counted(void) { if (on) __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED); }
void* malloc(size_t n) { counted(); return __libc_malloc(n); }
void* realloc(void* p, size_t n) { counted(); return __libc_realloc(p, n); }
void* calloc(size_t k, size_t n) { counted(); return __libc_calloc(k, n); }
void* memalign(size_t a, size_t n) { counted(); return __libc_memalign(a, n); }
void* aligned_alloc(size_t a, size_t n) { counted(); return __libc_memalign(a, n); }
int posix_memalign(void** p, size_t a, size_t n) { counted(); *p = __libc_memalign(a, n); return *p ? 0 : 12; }
"""

ALLOCATIONS_PER_STEP = r"""
import ctypes, json, sys
import numpy as np
import lstmcpp
counter = ctypes.CDLL(sys.argv[1])
counter.count_off.restype = ctypes.c_long
models = {
    "lstm": lstmcpp.LSTM(24, 40, seed=0),
    "projection, 2 layers": lstmcpp.LSTM(24, 40, num_layers=2, proj_size=16, peepholes=True, seed=0),
    "layer norm": lstmcpp.LSTM(24, 40, layer_norm=True, seed=0),
    "mogrifier": lstmcpp.LSTM(24, 40, mogrify_rounds=5, seed=0),
    "mogrifier, low rank": lstmcpp.LSTM(24, 40, mogrify_rounds=3, mogrify_rank=4, seed=0),
}
for scheme in ("int8", "bf16", "codebook4", "codebook8"):
    models[scheme] = lstmcpp.quantize(models["lstm"], scheme)
    models[scheme + " mogrifier"] = lstmcpp.quantize(models["mogrifier"], scheme)
counts = {}
for name, model in models.items():
    for batch in (None, 3, 40):  # 40 rows: one step of a batch packs its float weights
        s = model.stream(batch)
        x = np.ones((24,) if batch is None else (batch, 24), np.float32)
        out = np.empty((model.output_size,) if batch is None else (batch, model.output_size), np.float32)
        for _ in range(50):
            s.step(x, out=out)
        counter.count_on()
        for _ in range(200):
            s.step(x, out=out)
        counts[f"{name}, batch {batch}"] = counter.count_off()
for name in ("lstm", "int8", "layer norm"):  # a pool's step with out=: 256 streams (chunks), then 5
    pool = models[name].stream_pool(300)
    for n in (256, 5):
        ids, x = np.arange(n) * 7 % 300, np.ones((n, 24), np.float32)
        out = np.empty((n, models[name].output_size), np.float32)
        for _ in range(20):
            pool.step(ids, x, out=out)
        counter.count_on()
        for _ in range(100):
            pool.step(ids, x, out=out)
        counts[f"{name}, pool of {n}"] = counter.count_off()
s, x = models["lstm"].stream(64), np.ones((64, 24), np.float32)
counter.count_on()
for _ in range(200):
    s.step(x)  # no out=: each step's y is a new array, of 10 kB (the counter counts)
counts["control: without out="] = counter.count_off()
print(json.dumps(counts))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts glibc's allocations")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="AddressSanitizer owns the allocator")
def test_a_streams_step_allocates_nothing(tmp_path):
    """SPEC §6 / #11: a stream's step with out= allocates nothing: no Python object beyond the
    call's own, no heap block in the binding or the core, for every scheme, projection and layers,
    and the whole-row cells, one sequence or a batch; nor does a pool's step with out=. Counted by a malloc shim (LD_PRELOAD) in a
    child process; a step without out= must count (the shim works)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler for the allocation counter")
    source = tmp_path / "count.c"
    source.write_text(ALLOCATION_COUNTER)
    shim = tmp_path / "count.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(shim), str(source)], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim))
    run = subprocess.run([sys.executable, "-c", ALLOCATIONS_PER_STEP, str(shim)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts.pop("control: without out=") >= 200
    assert counts == {name: 0 for name in counts}
