"""The cell variants (SPEC §7) beyond the reference grid of test_core: parameter names and shapes,
thread counts (bitwise), one step at a time against whole sequences, token input, files, and
what is refused."""

import importlib.util
import pickle

import numpy as np
import pytest

import lstmcpp

from conftest import (ISAS, TOL, assert_bitwise_equal, assert_step_by_step_equals_full_sequence, compare_with_reference,
                      make_inputs, on_one_and_two_threads, rel_err, run_forward_backward)

# Each variant alone, and with every feature it combines with.
VARIANTS = {
    "cifg": dict(coupled_input_forget=True),
    "cifg_everything": dict(coupled_input_forget=True, num_layers=2, bidirectional=True, peepholes=True, proj_size=5,
                            cell_clip=0.5, proj_clip=0.4, batch_first=True, dropout=0.2),
    "layer_norm": dict(layer_norm=True),
    "layer_norm_everything": dict(layer_norm=True, num_layers=2, bidirectional=True, peepholes=True, proj_size=5,
                                  cell_clip=0.5, proj_clip=0.4, batch_first=True, dropout=0.2),
    "mogrifier": dict(mogrify_rounds=5),
    "mogrifier_everything": dict(mogrify_rounds=4, mogrify_rank=3, num_layers=2, bidirectional=True, peepholes=True,
                                 proj_size=5, cell_clip=0.5, proj_clip=0.4, batch_first=True, dropout=0.2),
    "all_variants": dict(coupled_input_forget=True, layer_norm=True, mogrify_rounds=3, mogrify_rank=2, num_layers=2,
                         peepholes=True, proj_size=5, dropout=0.2),
}
ONE_DIRECTION = [name for name, kw in VARIANTS.items() if not kw.get("bidirectional")]


def test_cifg_parameters_have_no_forget_block():
    H, I = 6, 4
    plain = lstmcpp.LSTM(I, H, peepholes=True, proj_size=3)
    cifg = lstmcpp.LSTM(I, H, peepholes=True, proj_size=3, coupled_input_forget=True)
    shapes = {k: v.shape for k, v in cifg.state_dict().items()}
    assert list(shapes) == list(plain.state_dict())  # the same names, in the same order
    assert shapes["weight_ih_l0"] == (3 * H, I) and shapes["weight_hh_l0"] == (3 * H, 3)
    assert shapes["bias_ih_l0"] == (3 * H,) and shapes["weight_peephole_l0"] == (2, H)
    assert shapes["weight_hr_l0"] == (3, H)
    # a quarter fewer gate weights: the products are a quarter smaller
    gate_weights = lambda m: sum(v.size for k, v in m.state_dict().items() if not k.startswith(("weight_hr", "weight_peephole")))
    assert gate_weights(cifg) * 4 == gate_weights(plain) * 3
    assert "coupled_input_forget=True" in repr(cifg)


def test_cifg_forget_bias_lowers_the_input_gate():
    """f = 1 - sigmoid(z_i) = sigmoid(-z_i): a forget bias b is -b on the input block."""
    a = lstmcpp.LSTM(3, 5, coupled_input_forget=True, seed=0)
    b = lstmcpp.LSTM(3, 5, coupled_input_forget=True, forget_bias=1.0, seed=0)
    np.testing.assert_allclose(b.state_dict()["bias_ih_l0"][:5], a.state_dict()["bias_ih_l0"][:5] - 1.0)
    np.testing.assert_array_equal(b.state_dict()["bias_ih_l0"][5:], a.state_dict()["bias_ih_l0"][5:])


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("isa", ISAS)
def test_one_and_two_threads_are_bitwise_equal(name, isa):
    model = lstmcpp.LSTM(7, 37, seed=1, **VARIANTS[name])
    x, state, lengths = make_inputs(model, T=6, B=5)
    dy = np.random.default_rng(2).standard_normal(model(x, state, lengths=lengths)[0].shape).astype(np.float32)

    def run():
        model._dropout_rng = np.random.default_rng(5)  # the same dropout masks in both runs
        return run_forward_backward(model, x, dy, lengths, state)

    one, two = on_one_and_two_threads(run, isa)
    assert_bitwise_equal(one, two)


WHOLE_ROW_CELLS = {
    "layer_norm": dict(layer_norm=True),
    "layer_norm_cifg": dict(layer_norm=True, coupled_input_forget=True, peepholes=True, proj_size=21, cell_clip=0.5),
    "mogrifier": dict(mogrify_rounds=5),
    "mogrifier_low_rank": dict(mogrify_rounds=4, mogrify_rank=3, proj_size=21, num_layers=2),
    "all": dict(layer_norm=True, mogrify_rounds=3, mogrify_rank=2, peepholes=True, num_layers=2),
}


@pytest.mark.parametrize("name", WHOLE_ROW_CELLS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("scheme", [None, "int8", "bf16", "codebook4"])
def test_one_sequence_of_a_whole_row_cell_splits_its_units_with_the_same_results(name, isa, scheme):
    """Layer norm and the Mogrifier need whole rows; one sequence's inference (a stream's step, a
    whole call, lengths, both directions) splits every row's units among the team, which meets
    inside each step. Its results equal one thread's bitwise, also when the team is starved
    mid-call (it finishes on one thread) or its worker never starts (the caller runs alone)."""
    from lstmcpp import _core
    from conftest import core_settings
    model = lstmcpp.LSTM(23, 37, seed=4, **WHOLE_ROW_CELLS[name])
    q = model if scheme is None else lstmcpp.quantize(model, scheme)
    both = lstmcpp.LSTM(23, 37, bidirectional=True, seed=5, **WHOLE_ROW_CELLS[name])
    both = both if scheme is None else lstmcpp.quantize(both, scheme)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 1, 23)).astype(np.float32)

    def run():
        _core.set_starvation_patience(-1)
        y, (h, c) = q(x)
        y_short, _ = q(x, lengths=np.array([17]))
        y_both, (h_both, _) = both(x[:9])
        stream = q.stream()
        steps = np.stack([stream.step(x[t, 0]) for t in range(5)])
        return [y, h, c, y_short, y_both, h_both, steps]

    with core_settings(threads=1, isa=isa, whole_team=True):
        alone = run()
    with core_settings(threads=2, isa=isa, whole_team=True):
        split = run()
        before = _core.starved_calls()
        _core.set_starvation_patience(0)  # every wait at a step's meeting starves the team
        try:
            y_starved, _ = q(x)
            assert _core.starved_calls() > before
        finally:
            _core.set_starvation_patience(-1)
        _core.set_workers_absent(True)
        try:
            absent = run()
        finally:
            _core.set_workers_absent(False)
            _core.set_starvation_patience(-1)
    assert_bitwise_equal(alone, split)
    assert_bitwise_equal(alone[:1], [y_starved])
    assert_bitwise_equal(alone, absent)
    np.testing.assert_array_equal(alone[0][:17], alone[3][:17])  # lengths: the same until the end
    assert not alone[3][17:].any()


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_unbatched_input_matches_reference(name, dtype):
    model = lstmcpp.LSTM(4, 6, dtype=dtype, seed=0, **{k: v for k, v in VARIANTS[name].items() if k != "batch_first"})
    x, state, _ = make_inputs(model, T=5, B=1)
    x = x[:, 0]
    state = tuple(s[:, 0] for s in state)
    errs = compare_with_reference(model, x, state, lengths=np.array(3), training=False)
    assert max(errs.values()) < TOL[dtype], errs


@pytest.mark.parametrize("name", ONE_DIRECTION)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_step_by_step_equals_full_sequence(name, dtype):
    kw = {k: v for k, v in VARIANTS[name].items() if k not in ("batch_first", "dropout")}
    assert_step_by_step_equals_full_sequence(lstmcpp.LSTM(5, 8, dtype=dtype, seed=4, **kw), TOL[dtype])


@pytest.mark.parametrize("name", ONE_DIRECTION)
def test_a_stream_and_a_pool_equal_the_whole_sequence(name):
    model = lstmcpp.LSTM(5, 12, seed=0, **{k: v for k, v in VARIANTS[name].items() if k != "batch_first"})
    x = np.random.default_rng(0).standard_normal((9, 3, 5)).astype(np.float32)
    y, (h, c) = model(x)
    s = model.stream(3)
    for t in range(9):
        assert rel_err(s.step(x[t]), y[t]) < 1e-5
    assert rel_err(s.state[0], h) < 1e-5 and rel_err(s.state[1], c) < 1e-5
    pool = model.stream_pool(8)
    ids = np.array([6, 1, 3])
    for t in range(9):
        assert rel_err(pool.step(ids, x[t]), y[t]) < 1e-5


@pytest.mark.parametrize("name", VARIANTS)
def test_token_input_equals_the_embedded_input(name):
    model = lstmcpp.LSTM(6, 9, seed=2, **VARIANTS[name])
    rng = np.random.default_rng(3)
    embedding = rng.standard_normal((11, 6)).astype(np.float32)
    ids = rng.integers(0, 11, size=(4, 7) if model.batch_first else (7, 4))
    model._dropout_rng = np.random.default_rng(1)
    y, _, cache = model.forward_tokens(ids, embedding)
    model._dropout_rng = np.random.default_rng(1)
    y_dense, _, cache_dense = model.forward(embedding[ids])
    assert rel_err(y, y_dense) < 1e-5
    dy = rng.standard_normal(y.shape)
    model.zero_grad()
    d_embedding, _ = model.backward(cache, dy)
    grads = {k: g.copy() for k, g in model.grads.items()}
    model.zero_grad()
    dx, _ = model.backward(cache_dense, dy)
    expected = np.zeros_like(embedding)
    np.add.at(expected, ids, dx)
    assert rel_err(d_embedding, expected) < 1e-4
    for k, g in model.grads.items():
        assert rel_err(grads[k], g, floor=1e-2) < 1e-4, k


@pytest.mark.parametrize("name", VARIANTS)
def test_files_and_pickle_are_bit_exact(tmp_path, name):
    model = lstmcpp.LSTM(5, 6, seed=3, **VARIANTS[name])
    x, state, lengths = make_inputs(model, T=7, B=4)
    path = tmp_path / "model.npz"
    lstmcpp.save(model, path)
    for clone in (lstmcpp.load(path), pickle.loads(pickle.dumps(model))):
        assert clone.get_config() == model.get_config()
        np.testing.assert_array_equal(clone(x, state, lengths=lengths)[0], model(x, state, lengths=lengths)[0])


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("scheme", ["int8", "bf16", "codebook4", "codebook8"])
def test_quantized_variants_run_every_scheme(name, scheme, tmp_path):
    model = lstmcpp.LSTM(5, 16, seed=3, **VARIANTS[name])
    q = lstmcpp.quantize(model, scheme)
    x, state, lengths = make_inputs(model, T=7, B=4)
    y, (h, c) = q(x, state, lengths=lengths)
    yd = q.dequantize()(x, state, lengths=lengths)[0]
    # int8 rounds the activations (test_quantized holds its integers to the reference exactly);
    # layer norm divides each product by its spread, which magnifies that rounding (5.7% measured
    # on layer_norm_everything)
    int8_tol = 8e-2 if VARIANTS[name].get("layer_norm") else 5e-2
    assert rel_err(y, yd, floor=1e-2) < (int8_tol if scheme == "int8" else 1e-5)
    lstmcpp.save(q, tmp_path / "q.npz")
    np.testing.assert_array_equal(lstmcpp.load(tmp_path / "q.npz")(x, state, lengths=lengths)[0], y)


def test_layer_norm_and_mogrifier_parameters():
    H, I = 6, 4
    ln = lstmcpp.LSTM(I, H, layer_norm=True, coupled_input_forget=True, bidirectional=True, seed=0)
    sd = ln.state_dict()
    assert sd["ln_weight_ih_l0"].shape == (3 * H,) and sd["ln_weight_hh_l0_reverse"].shape == (3 * H,)
    assert sd["ln_weight_c_l0"].shape == (H,) and sd["ln_bias_c_l0_reverse"].shape == (H,)
    assert (sd["ln_weight_c_l0"] == 1).all() and (sd["ln_bias_c_l0"] == 0).all()  # gains 1, bias 0
    mog = lstmcpp.LSTM(I, H, num_layers=2, proj_size=3, mogrify_rounds=3, seed=0)
    shapes = {k: v.shape for k, v in mog.state_dict().items() if "mogrify" in k}
    assert shapes == {"weight_mogrify_l0_1": (I, 3), "weight_mogrify_l0_2": (3, I), "weight_mogrify_l0_3": (I, 3),
                      "weight_mogrify_l1_1": (3, 3), "weight_mogrify_l1_2": (3, 3), "weight_mogrify_l1_3": (3, 3)}
    low = lstmcpp.LSTM(I, H, mogrify_rounds=2, mogrify_rank=2, bidirectional=True)
    shapes = {k: v.shape for k, v in low.state_dict().items() if "mogrify" in k}
    assert shapes["weight_mogrify_l0_1_a"] == (I, 2) and shapes["weight_mogrify_l0_1_b"] == (2, H)
    assert shapes["weight_mogrify_l0_2_a_reverse"] == (H, 2) and shapes["weight_mogrify_l0_2_b_reverse"] == (2, I)
    assert mog.num_parameters() == sum(v.size for v in mog.state_dict().values())


@pytest.mark.parametrize("kw, error, words", [
    (dict(mogrify_rounds=-1), ValueError, "mogrify_rounds must be >= 0"),
    (dict(mogrify_rounds=1.5), TypeError, "mogrify_rounds must be an integer"),
    (dict(mogrify_rank=2), ValueError, "mogrify_rank needs mogrify_rounds > 0"),
    (dict(mogrify_rounds=2, mogrify_rank=-3), ValueError, "mogrify_rank must be >= 0"),
])
def test_bad_variant_arguments(kw, error, words):
    with pytest.raises(error, match=words):
        lstmcpp.LSTM(3, 4, **kw)


def test_what_a_variant_refuses():
    for kw, words in [(dict(layer_norm=True), "layer normalisation"), (dict(mogrify_rounds=2), "Mogrifier")]:
        model = lstmcpp.LSTM(3, 4, **kw)
        if importlib.util.find_spec("onnx"):
            with pytest.raises(ValueError, match=words):
                model.export_onnx()
    pytest.importorskip("torch")
    for kw in [dict(coupled_input_forget=True), dict(layer_norm=True), dict(mogrify_rounds=1)]:
        with pytest.raises(ValueError, match=next(iter(kw))):
            lstmcpp.LSTM(3, 4, **kw).to_torch()


@pytest.mark.parametrize("cifg", [False, True])
def test_layer_norm_equals_the_cell_written_with_pytorch_ops(cifg):
    """The layer-normalised cell as a PyTorch user writes it (F.layer_norm, autograd's backward):
    the same outputs and parameter gradients, in float64."""
    torch = pytest.importorskip("torch")
    from lstmcpp.torch_cells import layer_norm_lstm

    model = lstmcpp.LSTM(5, 8, layer_norm=True, coupled_input_forget=cifg, dtype="float64", seed=0)
    rng = np.random.default_rng(1)
    for _, p in model.named_parameters():  # gains and bias away from 1 and 0
        p[...] = 0.5 * rng.standard_normal(p.shape)
    run = layer_norm_lstm(model)
    x = rng.standard_normal((6, 3, 5))
    y = run(torch.from_numpy(x))
    ours, _, cache = model.forward(x)
    assert rel_err(ours, y.detach().numpy()) < 1e-12
    dy = rng.standard_normal(ours.shape)
    y.backward(torch.from_numpy(dy))
    model.zero_grad()
    model.backward(cache, dy)
    for name, g in model.grads.items():
        assert rel_err(g, run.params[name[: -len("_l0")]].grad.numpy()) < 1e-12, name


@pytest.mark.parametrize("cell", [dict(layer_norm=True), dict(coupled_input_forget=True),
                                  dict(mogrify_rounds=3, mogrify_rank=2)])
def test_the_models_take_the_variants(tmp_path, cell):
    from lstmcpp.models import AttentionClassifier, CharLM, Forecaster

    rng = np.random.default_rng(0)
    lm = CharLM("abcdef", embedding_dim=4, hidden_size=8, seed=0, **cell)
    ids = rng.integers(0, 6, (3, 12))
    cls = AttentionClassifier(10, 3, embedding_dim=4, hidden_size=6, seed=0, **cell)
    fc = Forecaster(window=8, hidden_size=6, seed=0, **cell)
    batches = {lm: (ids[:, :-1], ids[:, 1:]), cls: (rng.integers(0, 10, (4, 7)), np.array([7, 3, 5, 1]), np.array([0, 2, 1, 0])),
               fc: (rng.standard_normal((5, 8, 1)), rng.standard_normal((5, 1, 1)))}
    for model, batch in batches.items():
        for k, v in cell.items():
            assert getattr(model.lstm, k) == v
        loss, _ = model.train_step(batch)
        assert np.isfinite(loss)
        path = tmp_path / f"{type(model).__name__}.npz"
        lstmcpp.save(model, path)
        loaded = lstmcpp.load(path)
        assert loaded.get_config() == model.get_config()
        model.reset_state()
        loaded.reset_state()
        assert model.evaluate(batch) == loaded.evaluate(batch)
