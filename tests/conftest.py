"""Shared helpers: run lstmcpp and the NumPy reference on the same weights and compare."""

import functools
import os

import numpy as np
import pytest

try:  # property-based tests: a few hundred examples in CI, thousands with HYPOTHESIS_PROFILE=thorough
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:
    pass

import lstmcpp
from lstmcpp import _core, reference

ISAS = [name for name in ("portable", "avx2", "avx512") if _core.isa_supported(name)]


def rel_err(a, b, floor=0.0):
    """max |a - b| / max(max |b|, floor): the error relative to the reference's scale. A floor
    keeps float32 results that cancel down to almost nothing (|y| ~ 1e-7 from O(1) terms, so
    rounding alone is a large fraction of them) from counting as relative error."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max() if b.size else 0.0, floor)
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


TOL = {"float64": 1e-10, "float32": 1e-4}


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once under each float32 kernel set this CPU supports."""
    before = _core.isa_in_use()
    assert _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


@pytest.fixture(params=["in_place", "packed"])
def products(request):
    """Runs the test twice: the per-step products reading the weights in place, then reading
    them packed per thread (each call's choice between the two normally depends on its size)."""
    _core.set_pack_min_rows(1 << 40 if request.param == "in_place" else 1)
    yield request.param
    _core.set_pack_min_rows(128)


@pytest.fixture
def whole_team():
    """Every time loop on the whole thread team, however small the cell."""
    threads = lstmcpp.get_num_threads()
    lstmcpp.set_num_threads(2)
    _core.set_min_work_per_thread(1)
    yield
    _core.set_min_work_per_thread(65536)
    lstmcpp.set_num_threads(threads)


def to_time_major(a, model, unbatched):
    a = np.asarray(a, np.float64)
    if unbatched:
        return a[:, None, :]
    return a.transpose(1, 0, 2) if model.batch_first else a


def from_time_major(a, model, unbatched):
    if unbatched:
        return a[:, 0]
    return a.transpose(1, 0, 2) if model.batch_first else a


def compare_with_reference(model, x, state=None, lengths=None, seed=0, training=True):
    """Forward and backward through ``model`` and the reference; returns {what: relative error}."""
    rng = np.random.default_rng(seed)
    unbatched = np.ndim(x) == 2
    y, (h_n, c_n), cache = model.forward(x, state, lengths=lengths, training=training)
    dy = rng.standard_normal(y.shape)
    dh = rng.standard_normal(h_n.shape)
    dc = rng.standard_normal(c_n.shape)
    model.zero_grad()
    dx, (dh0, dc0) = model.backward(cache, dy, (dh, dc))

    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    x_tm = to_time_major(np.asarray(x, model.dtype), model, unbatched)
    st = [None, None] if state is None else [np.asarray(s, model.dtype).astype(np.float64) for s in state]
    if unbatched and state is not None:
        st = [s[:, None, :] for s in st]
    lens = None if lengths is None else np.atleast_1d(lengths)
    masks = [m.astype(np.float64) for m in cache.dropout_masks] or None
    yr, (hr, cr), rcache = reference.forward(reference.Config.of(model), params, x_tm, st[0], st[1], lens, masks)
    dy_tm = to_time_major(dy, model, unbatched)
    dh_r = dh[:, None, :] if unbatched else dh
    dc_r = dc[:, None, :] if unbatched else dc
    dxr, (dh0r, dc0r), grads = reference.backward(rcache, dy_tm, dh_r, dc_r)

    sq = (lambda a: a[:, 0]) if unbatched else (lambda a: a)
    # float32: errors relative to at least 0.01 (see rel_err); float64 logic is checked exactly
    err = functools.partial(rel_err, floor=1e-2 if model.dtype == np.float32 else 0.0)
    errs = {
        "y": err(y, from_time_major(yr, model, unbatched)),
        "h_n": err(h_n, sq(hr)),
        "c_n": err(c_n, sq(cr)),
        "dx": err(dx, from_time_major(dxr, model, unbatched)),
        "dh0": err(dh0, sq(dh0r)),
        "dc0": err(dc0, sq(dc0r)),
    }
    assert set(grads) == set(model.grads)
    for name, g in grads.items():
        errs["grad " + name] = err(model.grads[name], g)
    return errs
