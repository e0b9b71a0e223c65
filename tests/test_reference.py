"""The NumPy reference against float64 central differences, feature by feature."""

import numpy as np
import pytest

from lstmcpp import reference

from conftest import GRID, reference_features, check_gradients


def loss_and_grads(cfg, params, x, h0, c0, lengths, masks, R, Rh, Rc):
    """loss = sum(y*R) + sum(h_n*Rh) + sum(c_n*Rc), so dy = R and the state gradients are Rh, Rc."""
    y, (h_n, c_n), cache = reference.forward(cfg, params, x, h0, c0, lengths, masks)
    loss = np.sum(y * R) + np.sum(h_n * Rh) + np.sum(c_n * Rc)
    return loss, cache


@pytest.mark.parametrize("name", GRID)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_reference_gradients_match_finite_differences(name, with_lengths):
    cfg = reference.Config(input_size=3, hidden_size=5, **reference_features(name))
    rng = np.random.default_rng(1)
    params = reference.init_params(cfg, seed=2)
    # Larger weights push some cells and outputs past the clips, so the clips are exercised.
    params = {k: 2.5 * v for k, v in params.items()}
    T, B = 4, 3
    D, L, P, H = cfg.directions, cfg.num_layers, cfg.output_size, cfg.hidden_size
    x = rng.standard_normal((T, B, 3))
    h0 = 0.5 * rng.standard_normal((D * L, B, P))
    c0 = 0.5 * rng.standard_normal((D * L, B, H))
    lengths = np.array([4, 2, 3]) if with_lengths else None
    masks = [(rng.random((T, B, D * P)) < 0.7) / 0.7 for _ in range(L - 1)] or None
    R = rng.standard_normal((T, B, D * P))
    Rh, Rc = rng.standard_normal(h0.shape), rng.standard_normal(c0.shape)

    _, cache = loss_and_grads(cfg, params, x, h0, c0, lengths, masks, R, Rh, Rc)
    dx, (dh0, dc0), grads = reference.backward(cache, R, Rh, Rc)

    targets = [("x", x, dx), ("h0", h0, dh0), ("c0", c0, dc0)]
    targets += [(n, params[n], grads[n]) for n in params]
    check_gradients(lambda: loss_and_grads(cfg, params, x, h0, c0, lengths, masks, R, Rh, Rc)[0], targets, rng)
    clipped = 0
    if cfg.cell_clip or cfg.proj_clip:
        y, (h_n, c_n), cache = reference.forward(cfg, params, x, h0, c0, lengths, masks)
        for cell in cache["cells"]:
            for s in cell["steps"]:
                if cfg.cell_clip:
                    clipped += np.sum(np.abs(s["c_new"]) >= cfg.cell_clip)
                if cfg.proj_clip:
                    clipped += np.sum(np.abs(s["h_new"]) >= cfg.proj_clip)
        assert clipped > 0, "the clip never engaged: the test would not see a wrong clip gradient"


def test_reference_step_by_step_equals_full_sequence():
    cfg = reference.Config(input_size=3, hidden_size=5, num_layers=2, peepholes=True, proj_size=4, cell_clip=1.0)
    params = reference.init_params(cfg, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    R = rng.standard_normal((6, 2, 4))
    y, (h, c), cache = reference.forward(cfg, params, x)
    dx, (dh0, dc0), grads = reference.backward(cache, R)

    state = (np.zeros((2, 2, 4)), np.zeros((2, 2, 5)))
    caches, ys = [], []
    for t in range(6):
        yt, state, ct = reference.forward(cfg, params, x[t : t + 1], *state)
        ys.append(yt)
        caches.append(ct)
    np.testing.assert_allclose(np.concatenate(ys), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state[0], h, rtol=1e-12, atol=1e-12)
    # Backward step by step, carrying the state gradients back through the chunks.
    dh, dc = np.zeros_like(h), np.zeros_like(c)
    total = {k: np.zeros_like(v) for k, v in params.items()}
    for t in reversed(range(6)):
        dxt, (dh, dc), g = reference.backward(caches[t], R[t : t + 1], dh, dc)
        np.testing.assert_allclose(dxt[0], dx[t], rtol=1e-10, atol=1e-12)
        for k in total:
            total[k] += g[k]
    np.testing.assert_allclose(dh, dh0, rtol=1e-10, atol=1e-12)
    for k in total:
        np.testing.assert_allclose(total[k], grads[k], rtol=1e-10, atol=1e-12)


def test_the_tanh_rnn_input_gradient_matches_finite_differences():
    params = reference.init_rnn_tanh(3, 5, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    R = rng.standard_normal((6, 2, 5))
    y, cache = reference.rnn_tanh_forward(params, x)
    dx = reference.rnn_tanh_backward(cache, R)
    check_gradients(lambda: np.sum(reference.rnn_tanh_forward(params, x)[0] * R), [("x", x, dx)], rng, samples=12)
