"""lstmcpp.nn, lstmcpp.optim, lstmcpp.models and fit: gradient checks, learning, determinism."""

import math

import numpy as np
import pytest

import lstmcpp
from lstmcpp import nn, optim
from lstmcpp.models import AttentionClassifier, CharLM, Forecaster
from lstmcpp.train import fit

from conftest import check_gradients


def test_linear_gradients():
    rng = np.random.default_rng(0)
    layer = nn.Linear(5, 3, dtype="float64", rng=rng)
    x = rng.standard_normal((2, 4, 5))
    R = rng.standard_normal((2, 4, 3))
    y, cache = layer.forward(x)
    np.testing.assert_allclose(y, x @ layer.params["weight"].T + layer.params["bias"], rtol=1e-12)
    dx = layer.backward(cache, R)
    loss = lambda: float(np.sum(layer.forward(x)[0] * R))
    check_gradients(loss, [("x", x, dx), ("weight", layer.params["weight"], layer.grads["weight"]),
                           ("bias", layer.params["bias"], layer.grads["bias"])], rng)


def test_embedding_gradients_gather_repeated_ids():
    rng = np.random.default_rng(0)
    emb = nn.Embedding(7, 4, dtype="float64", rng=rng)
    ids = np.array([[1, 3, 1], [6, 1, 0]])
    R = rng.standard_normal((2, 3, 4))
    y, cache = emb.forward(ids)
    emb.backward(cache, R)
    loss = lambda: float(np.sum(emb.forward(ids)[0] * R))
    check_gradients(loss, [("weight", emb.params["weight"], emb.grads["weight"])], rng, samples=28)
    with pytest.raises(ValueError, match="ids: every id must be in 0..6"):
        emb.forward(np.array([7]))
    with pytest.raises(TypeError, match="ids: expected integers"):
        emb.forward(np.array([1.0]))


def test_dropout_scales_and_masks():
    drop = nn.Dropout(0.5, rng=np.random.default_rng(0))
    x = np.ones((1000,))
    y, mask = drop.forward(x)
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    np.testing.assert_array_equal(drop.backward(mask, np.ones_like(x)), mask)
    np.testing.assert_array_equal(drop.forward(x, training=False)[0], x)


@pytest.mark.parametrize("with_lengths", [False, True])
def test_attention_pool_gradients_and_masking(with_lengths):
    rng = np.random.default_rng(1)
    pool = nn.AttentionPool(6, 5, dtype="float64", rng=rng)
    pool.params["bias"][...] = rng.standard_normal(5)
    h = rng.standard_normal((3, 4, 6))
    lengths = np.array([4, 2, 1]) if with_lengths else None
    R = rng.standard_normal((3, 6))
    (context, weights), cache = pool.forward(h, lengths)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-12)
    if with_lengths:
        assert not weights[1, 2:].any() and weights[2, 0] == 1.0
    dh = pool.backward(cache, R)
    loss = lambda: float(np.sum(pool.forward(h, lengths)[0][0] * R))
    check_gradients(loss, [("h", h, dh)] + [(n, pool.params[n], pool.grads[n]) for n in pool.params], rng)


@pytest.mark.parametrize("with_mask", [False, True])
def test_softmax_cross_entropy_gradient(with_mask):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 4, 5))
    targets = rng.integers(0, 5, (3, 4))
    mask = (rng.random((3, 4)) < 0.6) if with_mask else None
    loss, dlogits = nn.softmax_cross_entropy(logits, targets, mask)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    picked = -np.log(np.take_along_axis(p, targets[..., None], -1)[..., 0])
    expected = picked[mask].mean() if with_mask else picked.mean()
    assert abs(loss - expected) < 1e-12
    check_gradients(lambda: nn.softmax_cross_entropy(logits, targets, mask)[0], [("logits", logits, dlogits)], rng, samples=20)


def test_softmax_cross_entropy_single_precision_and_edges():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((40, 7)) * 30
    targets = rng.integers(0, 7, 40)
    loss64, d64 = nn.softmax_cross_entropy(logits, targets)
    loss32, d32 = nn.softmax_cross_entropy(logits.astype(np.float32), targets)
    assert d32.dtype == np.float32 and abs(loss32 - loss64) < 1e-5 * abs(loss64)
    np.testing.assert_allclose(d32, d64, atol=1e-6)
    # huge logits stay finite; other dtypes come back in their own dtype
    loss, d = nn.softmax_cross_entropy(np.array([[1e4, -1e4, 0.0]], np.float32), np.array([1]))
    assert np.isfinite(loss) and abs(loss - 2e4) < 1 and np.isfinite(d).all()
    assert nn.softmax_cross_entropy(logits.astype(np.float16), targets)[1].dtype == np.float16
    with pytest.raises(ValueError, match=r"targets\[3\] = 7 is outside 0\.\.6"):
        nn.softmax_cross_entropy(logits, np.where(np.arange(40) == 3, 7, targets))
    with pytest.raises(TypeError, match="targets: expected integers"):
        nn.softmax_cross_entropy(logits, targets.astype(float))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.01)), ("Adam", dict(lr=0.01, weight_decay=0.1)),
                                         ("AdamW", dict(lr=0.01, weight_decay=0.1))])
def test_adam_matches_its_formula(dtype, name, kwargs):
    """The C++ update against Adam written out in float64 NumPy (runs without PyTorch)."""
    rng = np.random.default_rng(0)
    layer = nn.Linear(5, 3, dtype=dtype, rng=rng)
    opt = getattr(optim, name)(layer, **kwargs)
    b1, b2, eps, wd, lr = 0.9, 0.999, 1e-8, kwargs.get("weight_decay", 0.0), kwargs["lr"]
    p = {k: v.astype(np.float64) for k, v in layer.params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(1, 6):
        g = {k: rng.standard_normal(v.shape) for k, v in p.items()}
        for k in g:
            layer.grads[k][...] = g[k]
            g[k] = layer.grads[k].astype(np.float64)
            if name == "AdamW":
                p[k] *= 1 - lr * wd
            else:
                g[k] = g[k] + wd * p[k]
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            p[k] -= lr * (m[k] / (1 - b1**t)) / (np.sqrt(v2[k] / (1 - b2**t)) + eps)
        opt.step()
    for k in p:
        np.testing.assert_allclose(layer.params[k], p[k], rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-7)


def test_adam_refuses_parameters_it_cannot_update():
    layer = nn.Linear(2, 2)
    layer.params["weight"] = layer.params["weight"].astype(np.float16)
    layer.grads["weight"] = layer.grads["weight"].astype(np.float16)
    with pytest.raises(TypeError, match="Adam updates C-contiguous float32 or float64 parameters, got a float16"):
        optim.Adam(layer)


def test_mse_gradient():
    rng = np.random.default_rng(3)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss, d = nn.mse(pred, target)
    check_gradients(lambda: nn.mse(pred, target)[0], [("pred", pred, d)], rng)
    with pytest.raises(ValueError, match="expected the prediction's shape"):
        nn.mse(pred, target[..., None])


def test_matmul_on_our_blas_matches_numpy():
    rng = np.random.default_rng(0)
    for dtype, rtol in ((np.float32, 1e-6), (np.float64, 1e-14)):
        a, b = rng.standard_normal((37, 19)).astype(dtype), rng.standard_normal((23, 19)).astype(dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)

        def assert_close(got, want):
            # Elements that cancel are off by the rounding of the largest terms, not their own.
            np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max() * 19)

        assert_close(nn.matmul(a, b, trans_b=True), a64 @ b64.T)
        out = np.ones((19, 19), dtype)
        nn.matmul(a, a, trans_a=True, out=out, accumulate=True)
        assert_close(out, 1 + a64.T @ a64)
    with pytest.raises(ValueError, match="inner sizes differ"):
        nn.matmul(np.ones((2, 3)), np.ones((4, 2)))


def model_gradient_check(model, batch, rng, samples=4):
    model.zero_grad()
    model.reset_state()
    loss_sum, n = model.train_step(batch)

    def loss():
        model.reset_state()
        return model.evaluate(batch)[0] / n

    model.reset_state()
    assert abs(loss() - loss_sum / n) < 1e-12  # evaluate and train_step agree (no dropout here)
    named = dict(model.named_parameters())
    grads = dict(model.named_gradients())
    check_gradients(loss, [(k, named[k], grads[k]) for k in named], rng, samples=samples)


def test_charlm_gradients_end_to_end():
    rng = np.random.default_rng(0)
    lm = CharLM("abcdefg", embedding_dim=5, hidden_size=6, num_layers=2, dtype="float64", seed=0)
    x, y = rng.integers(0, 7, (3, 5)), rng.integers(0, 7, (3, 5))
    model_gradient_check(lm, (x, y), rng)


def test_forecaster_gradients_end_to_end():
    rng = np.random.default_rng(1)
    model = Forecaster(n_features=2, window=5, horizon=3, hidden_size=6, dtype="float64", seed=0)
    x, y = rng.standard_normal((4, 5, 2)), rng.standard_normal((4, 3, 2))
    model_gradient_check(model, (x, y), rng)


def test_attention_classifier_gradients_end_to_end():
    rng = np.random.default_rng(2)
    model = AttentionClassifier(9, 3, embedding_dim=4, hidden_size=5, attention_dim=4, dtype="float64", seed=0)
    ids, lengths, labels = rng.integers(0, 9, (4, 6)), np.array([6, 3, 1, 5]), rng.integers(0, 3, 4)
    model_gradient_check(model, (ids, lengths, labels), rng)


def test_charlm_learns_and_generates(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 60
    lm = CharLM.from_text(text, embedding_dim=16, hidden_size=64, seed=0)
    ids = lm.encode(text)
    history = fit(lm, lm.batches(ids, 8, 20, seed=0), epochs=6, optimizer=optim.Adam(lm, lr=1e-2), progress=False, log=None)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    out = lm.generate("the quick", 40, temperature=0, seed=0)
    assert "brown" in out or "fox" in out, out
    lstmcpp.save(lm, tmp_path / "lm.npz")
    loaded = lstmcpp.load(tmp_path / "lm.npz")
    assert isinstance(loaded, CharLM) and loaded.generate("the quick", 40, temperature=0) == out
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        lm.encode("Z")


def test_forecaster_learns_a_sine_and_round_trips(tmp_path):
    t = np.arange(600)
    series = np.sin(t * 2 * np.pi / 25) * 3 + 10
    model = Forecaster(window=20, horizon=2, hidden_size=24, seed=0)
    model.fit_scaling(series[:500])
    history = fit(model, model.windows(series[:500], 32, seed=0), epochs=15, optimizer=optim.Adam(model, lr=1e-2),
                  val_data=model.windows(series[480:], 64, shuffle=False), progress=False, log=None)
    assert history.val_loss[-1] < 0.05 * history.val_loss[0] or history.val_loss[-1] < 1e-3
    pred = model.forecast(series[:580], 10)
    assert pred.shape == (10,) and np.abs(pred - series[580:590]).max() < 0.5
    lstmcpp.save(model, tmp_path / "f.npz")
    np.testing.assert_array_equal(lstmcpp.load(tmp_path / "f.npz").forecast(series[:580], 10), pred)


def test_attention_classifier_learns_where_a_token_is():
    """Class = whether token 1 occurs in the real part of the sequence: attention must find it."""
    rng = np.random.default_rng(0)
    N, T = 512, 12
    ids = rng.integers(2, 10, (N, T))
    lengths = rng.integers(4, T + 1, N)
    labels = rng.integers(0, 2, N)
    for k in np.nonzero(labels)[0]:
        ids[k, rng.integers(0, lengths[k])] = 1
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 1  # padding holds the token too: it must be ignored
    model = AttentionClassifier(10, 2, embedding_dim=8, hidden_size=16, attention_dim=8, seed=0)
    batches = [(ids[k : k + 32], lengths[k : k + 32], labels[k : k + 32]) for k in range(0, N, 32)]
    history = fit(model, batches, epochs=15, optimizer=optim.Adam(model, lr=1e-2), progress=False, log=None)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    probs, weights = model.predict(ids, lengths)
    assert (probs.argmax(1) == labels).mean() > 0.9
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
])
def test_optimizers_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    layer = nn.Linear(4, 3, dtype="float64", rng=rng)
    w0 = {k: v.copy() for k, v in layer.params.items()}
    ours = getattr(optim, name)(layer, **kwargs)
    tw = {k: torch.tensor(v, requires_grad=True) for k, v in w0.items()}
    theirs = getattr(torch.optim, name)(list(tw.values()), **kwargs)
    for _ in range(5):
        g = {k: rng.standard_normal(v.shape) for k, v in w0.items()}
        ours.zero_grad()
        for k in g:
            layer.grads[k][...] = g[k]
        ours.step()
        theirs.zero_grad()
        for k, t in tw.items():
            t.grad = torch.tensor(g[k])
        theirs.step()
    for k in w0:
        np.testing.assert_allclose(layer.params[k], tw[k].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_clip_grad_norm():
    grads = [np.full(3, 3.0), np.full(4, 4.0)]
    norm = optim.clip_grad_norm(grads, 1.0)
    assert abs(norm - math.sqrt(27 + 64)) < 1e-12
    assert abs(math.sqrt(sum((g * g).sum() for g in grads)) - 1.0) < 1e-5


def test_schedules():
    layer = nn.Linear(2, 2)
    opt = optim.SGD(layer, lr=1.0)
    step = optim.StepLR(opt, step_size=2, gamma=0.5)
    assert [step.step() for _ in range(4)] == [1.0, 0.5, 0.5, 0.25]
    opt = optim.SGD(layer, lr=1.0)
    cosine = optim.CosineWithWarmup(opt, warmup=2, total=6, min_lr=0.1)
    lrs = [opt.lr] + [cosine.step() for _ in range(6)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and abs(lrs[-1] - 0.1) < 1e-12
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_fit_is_deterministic_for_a_seed():
    text = "abcabcabdabcab" * 40

    def run():
        lm = CharLM.from_text(text, embedding_dim=4, hidden_size=8, dropout=0.0, num_layers=2, seed=3)
        h = fit(lm, lm.batches(lm.encode(text), 4, 10, seed=5), epochs=2, progress=False, log=None)
        return h.train_loss, lm.state_dict()

    (l1, s1), (l2, s2) = run(), run()
    assert l1 == l2
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])


def test_fit_early_stopping_checkpoint_and_time_budget(tmp_path):
    text = "abcdefgh" * 50
    lm = CharLM.from_text(text, embedding_dim=4, hidden_size=8, seed=0)
    ids = lm.encode(text)
    # a learning rate of zero: the validation loss never improves after the first epoch
    h = fit(lm, lm.batches(ids, 4, 10, seed=0), epochs=10, optimizer=optim.SGD(lm, lr=1e-12),
            val_data=lm.batches(ids, 4, 10, seed=1), patience=2, checkpoint=tmp_path / "best.npz", progress=False, log=None)
    assert h.stopped == "early stopping" and len(h.val_loss) <= 4 and h.best_epoch == 0
    assert isinstance(lstmcpp.load(tmp_path / "best.npz"), CharLM)
    h = fit(lm, lm.batches(ids, 4, 10, seed=0), epochs=1000, time_budget=0.2, progress=False, log=None)
    assert h.stopped == "time budget" and h.seconds < 5


def test_fit_refuses_a_diverging_loss():
    text = "abcd" * 100
    lm = CharLM.from_text(text, embedding_dim=4, hidden_size=8, seed=0)
    lm.head.params["weight"][...] = np.nan
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        fit(lm, lm.batches(lm.encode(text), 4, 10), epochs=1, progress=False, log=None)
