"""Other frameworks: same numbers as torch.nn.LSTM (outputs and gradients), PyTorch, Keras 3 and
ONNX in and out, and their packages named when missing."""

import numpy as np
import pytest

import lstmcpp

from conftest import rel_err, TORCH_GRID, ONNX_GRID, torch_pair, torch_inputs


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("name", TORCH_GRID)
def test_same_outputs_and_gradients_as_torch(name, dtype, tol):
    torch = pytest.importorskip("torch")
    ref, ours = torch_pair(TORCH_GRID[name], dtype)
    x, h0, c0 = torch_inputs(ref, dtype)
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    yt, (hnt, cnt) = ref(xt, (h0t, c0t))
    rng = np.random.default_rng(1)
    R, Rh, Rc = (rng.standard_normal(t.shape).astype(dtype) for t in (yt, hnt, cnt))
    ((yt * torch.tensor(R)).sum() + (hnt * torch.tensor(Rh)).sum() + (cnt * torch.tensor(Rc)).sum()).backward()

    y, (hn, cn), cache = ours.forward(x, (h0, c0))
    dx, (dh0, dc0) = ours.backward(cache, R, (Rh, Rc))
    assert rel_err(y, yt.detach().numpy()) < tol
    assert rel_err(hn, hnt.detach().numpy()) < tol
    assert rel_err(cn, cnt.detach().numpy()) < tol
    assert rel_err(dx, xt.grad.numpy()) < tol
    assert rel_err(dh0, h0t.grad.numpy()) < tol
    assert rel_err(dc0, c0t.grad.numpy()) < tol
    for name_, p in ref.named_parameters():
        assert rel_err(ours.grads[name_], p.grad.numpy()) < tol, name_


def test_unbatched_input_matches_torch():
    torch = pytest.importorskip("torch")
    ref, ours = torch_pair(dict(num_layers=2, bidirectional=True), "float64")
    x = np.random.default_rng(0).standard_normal((4, 6))
    yt, (hnt, cnt) = ref(torch.tensor(x))
    y, (hn, cn) = ours(x)
    assert y.shape == tuple(yt.shape) and hn.shape == tuple(hnt.shape)
    assert rel_err(y, yt.detach().numpy()) < 1e-10 and rel_err(cn, cnt.detach().numpy()) < 1e-10


def inputs(model, T=7, B=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, model.input_size) if model.batch_first else (T, B, model.input_size)).astype(model.dtype)
    lengths = np.array([T, 3, T - 1, 1][:B])
    return x, lengths


@pytest.mark.parametrize("name", TORCH_GRID)
def test_from_torch_and_back(name):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(5, 6, **TORCH_GRID[name])
    model = lstmcpp.LSTM.from_torch(module)
    assert model.batch_first == module.batch_first and model.proj_size == module.proj_size
    x, lengths = inputs(model)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False)
    with torch.no_grad():
        out, (h, c) = module(packed)
    y_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first, total_length=7)
    y, (h_n, c_n) = model(x, lengths=lengths)
    assert rel_err(y, y_torch.numpy()) < 1e-5 and rel_err(h_n, h.numpy()) < 1e-5 and rel_err(c_n, c.numpy()) < 1e-5

    back = model.to_torch()
    for k, v in module.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert back.batch_first == module.batch_first and back.bidirectional == module.bidirectional


def test_to_torch_refuses_what_torch_lacks():
    pytest.importorskip("torch")
    for kw, word in [(dict(peepholes=True), "peepholes"), (dict(cell_clip=1.0), "cell_clip"), (dict(proj_size=2, proj_clip=1.0), "proj_clip")]:
        with pytest.raises(ValueError, match=word):
            lstmcpp.LSTM(3, 4, **kw).to_torch()


# Keras 3.15's torch backend converts NumPy arrays through an __array__ without NumPy 2's copy
# keyword; that warning is Keras' own, not lstmcpp's.
keras_numpy2_warning = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture
def keras():
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("these tests run Keras on its PyTorch backend (KERAS_BACKEND=torch)")
    keras.utils.set_random_seed(0)
    return keras


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
@keras_numpy2_warning
def test_from_keras_lstm(keras, return_sequences, use_bias):
    layer = keras.layers.LSTM(6, return_sequences=return_sequences, use_bias=use_bias, bias_initializer="uniform")
    x = np.random.default_rng(0).standard_normal((4, 7, 5)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(layer(x))
    model = lstmcpp.LSTM.from_keras(layer)
    y, (h_n, _) = model(x)
    assert rel_err(y if return_sequences else y[:, -1], expected) < 1e-5
    if not return_sequences:
        assert rel_err(h_n[-1], expected) < 1e-5


@keras_numpy2_warning
def test_from_keras_bidirectional(keras):
    layer = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True, bias_initializer="uniform"))
    x = np.random.default_rng(0).standard_normal((3, 7, 5)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(layer(x))
    y, _ = lstmcpp.LSTM.from_keras(layer)(x)
    assert rel_err(y, expected) < 1e-5


@keras_numpy2_warning
def test_from_keras_refuses_what_it_cannot_honour(keras):
    x = np.zeros((1, 2, 3), np.float32)
    cases = [
        (keras.layers.LSTM(4, go_backwards=True), "go_backwards"),
        (keras.layers.LSTM(4, activation="relu"), "activation='relu'"),
        (keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), merge_mode="sum"), "merge_mode='sum'"),
        (keras.layers.GRU(4), "expected keras.layers.LSTM"),
    ]
    for layer, words in cases:
        layer(x)
        with pytest.raises((ValueError, TypeError), match=words):
            lstmcpp.LSTM.from_keras(layer)
    with pytest.raises(ValueError, match="no weights yet"):
        lstmcpp.LSTM.from_keras(keras.layers.LSTM(4))


@pytest.fixture
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", ONNX_GRID)
def test_export_onnx_runs_in_onnxruntime_with_the_same_outputs(ort, tmp_path, name):
    model = lstmcpp.LSTM(5, 6, seed=1, **ONNX_GRID[name])
    path = tmp_path / "m.onnx"
    model.export_onnx(path, lengths=True, state=True)
    x, lengths = inputs(model)
    DL = model.num_directions * model.num_layers
    rng = np.random.default_rng(1)
    h0 = rng.standard_normal((DL, 4, 6)).astype(np.float32)
    c0 = rng.standard_normal((DL, 4, 6)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y, h_n, c_n = session.run(None, {"x": x, "lengths": lengths.astype(np.int32), "h0": h0, "c0": c0})
    ours, (oh, oc) = model(x, (h0, c0), lengths=lengths)
    assert rel_err(y, ours) < 1e-5 and rel_err(h_n, oh) < 1e-5 and rel_err(c_n, oc) < 1e-5

    loaded = lstmcpp.load_onnx(path)  # and back in
    assert loaded.get_config()["num_layers"] == model.num_layers and loaded.peepholes == model.peepholes
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)


@pytest.mark.parametrize("name", ["plain", "stacked_no_projection"])
def test_the_default_export_takes_x_alone(ort, tmp_path, name):
    config = {"plain": {}, "stacked_no_projection": dict(num_layers=2, bidirectional=True, batch_first=True)}[name]
    model = lstmcpp.LSTM(5, 6, seed=2, **config)
    model.export_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    for T, B in [(3, 1), (7, 4)]:  # T and B are dynamic
        x = np.random.default_rng(T).standard_normal((B, T, 5) if model.batch_first else (T, B, 5)).astype(np.float32)
        y, h_n, c_n = session.run(None, {"x": x})
        ours, (oh, oc) = model(x)
        assert rel_err(y, ours) < 1e-5 and rel_err(h_n, oh) < 1e-5 and rel_err(c_n, oc) < 1e-5


@pytest.mark.parametrize("input_forget", [0, 1])
def test_load_onnx_of_a_foreign_single_node(ort, input_forget):
    """A hand-built node in ONNX's own conventions (gate order i,o,f,c; P as i,o,f; B as Wb,Rb),
    run by ONNX Runtime; and the same node with layout=1 (batch-major), which ORT cannot run.
    With input_forget=1 (CIFG), its forget block and peephole hold random values that ONNX
    Runtime ignores (f = 1 - i), and so must lstmcpp."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    H, I = 4, 3
    W, R = rng.standard_normal((1, 4 * H, I)).astype(np.float32), rng.standard_normal((1, 4 * H, H)).astype(np.float32)
    B, P = rng.standard_normal((1, 8 * H)).astype(np.float32), rng.standard_normal((1, 3 * H)).astype(np.float32)
    weights = [numpy_helper.from_array(a, n) for a, n in [(W, "W"), (R, "R"), (B, "B"), (P, "P")]]

    def node_model(layout):
        node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y", "Y_h"], hidden_size=H, layout=layout,
                                input_forget=input_forget)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
                                   helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)], initializer=weights)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])

    x = rng.standard_normal((5, 2, I)).astype(np.float32)  # (T,B,I)
    y, y_h = ort.InferenceSession(node_model(0).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    model = lstmcpp.load_onnx(node_model(0))
    assert model.peepholes and not model.batch_first and model.coupled_input_forget == bool(input_forget)
    ours, (h_n, _) = model(x)
    assert rel_err(ours, y[:, 0]) < 1e-5 and rel_err(h_n, y_h) < 1e-5
    batch_major = lstmcpp.load_onnx(node_model(1))
    assert batch_major.batch_first
    np.testing.assert_array_equal(batch_major(x.transpose(1, 0, 2))[0], ours.transpose(1, 0, 2))


def test_onnx_refusals(ort, tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    for kw, words in [(dict(proj_size=2), "proj_size"), (dict(cell_clip=1.0), "cell_clip")]:
        with pytest.raises(ValueError, match=words):
            lstmcpp.LSTM(3, 4, **kw).export_onnx()
    H = 2
    W, R = np.zeros((1, 8, 3), np.float32), np.zeros((1, 8, 2), np.float32)
    for attrs, words in [(dict(clip=1.0), "clip=1.0"),
                         (dict(direction="sideways"), "direction"), (dict(activations=["Relu", "Tanh", "Tanh"]), "activations")]:
        node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=H, **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 3])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                                  initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")])
        with pytest.raises(ValueError, match=words):
            lstmcpp.load_onnx(helper.make_model(graph))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        lstmcpp.load_onnx(bad)


def test_optional_packages_are_named_when_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    import importlib

    monkeypatch.setattr(importlib, "import_module", lambda name: no_onnx(name))
    with pytest.raises(ImportError, match="pip install onnx"):
        lstmcpp.LSTM(2, 3).export_onnx()


# ------------------------------------------------------------------------------------------------
# whole models as ONNX graphs (lstmcpp.export_onnx)


def _session(ort, model, path):
    lstmcpp.export_onnx(model, path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_a_charlm_exports_whole_ids_to_logits(ort, tmp_path, num_layers):
    """ids and a state in, logits and the next state out, as CharLM.forward gives them; fed its
    own state back, the graph continues a sequence as the model does."""
    lm = lstmcpp.models.CharLM("abcdefgh", embedding_dim=6, hidden_size=10, num_layers=num_layers, seed=0)
    session = _session(ort, lm, tmp_path / "lm.onnx")
    ids = np.random.default_rng(0).integers(0, 8, (3, 7))
    logits, (h, c), _ = lm.forward(ids, None, training=False)
    zeros = np.zeros((num_layers, 3, 10), np.float32)
    got, h1, c1 = session.run(None, {"ids": ids[:, :4].astype(np.int64), "h0": zeros, "c0": zeros})
    got2, h2, c2 = session.run(None, {"ids": ids[:, 4:].astype(np.int64), "h0": h1, "c0": c1})
    assert rel_err(np.concatenate([got, got2], 1), logits) < 1e-5
    assert rel_err(h2, h) < 1e-5 and rel_err(c2, c) < 1e-5


def test_a_forecaster_exports_raw_window_to_raw_forecast(ort, tmp_path):
    """The scaling is inside the graph: a raw window in, the raw next `horizon` values out."""
    fc = lstmcpp.models.Forecaster(n_features=2, window=12, horizon=3, hidden_size=9, num_layers=2, seed=0)
    series = np.random.default_rng(1).standard_normal((100, 2)) * 3 + 5
    fc.fit_scaling(series)
    session = _session(ort, fc, tmp_path / "fc.onnx")
    windows = np.stack([series[k : k + 12] for k in (0, 30, 61)]).astype(np.float32)
    got = session.run(None, {"x": windows})[0]
    for row, window in zip(got, windows):
        np.testing.assert_allclose(row, fc.forecast(window, 3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_an_attention_classifier_exports_ids_and_lengths_to_probabilities(ort, tmp_path, bidirectional):
    """Class probabilities and attention weights equal predict's, every length honoured (no
    attention past a sequence's length, its reverse direction starting at its last real step)."""
    ac = lstmcpp.models.AttentionClassifier(vocab_size=11, num_classes=4, embedding_dim=5, hidden_size=6,
                                            attention_dim=7, bidirectional=bidirectional, seed=0)
    session = _session(ort, ac, tmp_path / "ac.onnx")
    ids = np.random.default_rng(2).integers(0, 11, (4, 9))
    lengths = np.array([9, 3, 1, 6], np.int32)
    p, weights = ac.predict(ids, lengths)
    got_p, got_w = session.run(None, {"ids": ids.astype(np.int64), "lengths": lengths})
    assert rel_err(got_p, p) < 1e-5 and rel_err(got_w, weights) < 1e-5
    assert not got_w[1, 3:].any() and got_w[2, 0] == 1.0


def test_int8_models_export_whole_as_onnxruntimes_quantized_operators(ort, tmp_path):
    """A CharLM quantized to int8 (its LSTM and its head of 5,120 weights) goes out as
    DynamicQuantizeLSTM and DynamicQuantizeMatMul nodes holding its integers; ONNX Runtime's
    logits are as close to the float model's as lstmcpp's int8 ones (each rounds the activations
    its own way). An int8 Forecaster and AttentionClassifier (their small heads stay float) too."""
    import onnx

    lm = lstmcpp.models.CharLM("abcdefghijklmnopqrstuvwxyz0123456789 .,;", embedding_dim=16, hidden_size=128,
                               num_layers=2, seed=0)
    q = lstmcpp.quantize(lm, "int8")
    assert type(q.head).__name__ == "QuantizedLinear"
    session = _session(ort, q, tmp_path / "lm.onnx")
    assert {"DynamicQuantizeLSTM", "DynamicQuantizeMatMul"} <= {n.op_type for n in onnx.load(tmp_path / "lm.onnx").graph.node}
    ids = np.random.default_rng(0).integers(0, 40, (3, 30))
    float_logits = lm.forward(ids, None, training=False)[0]
    ours = q.forward(ids, None, training=False)[0]
    zeros = np.zeros((2, 3, 128), np.float32)
    theirs = session.run(None, {"ids": ids.astype(np.int64), "h0": zeros, "c0": zeros})[0]
    assert rel_err(ours, float_logits) < 0.02 and rel_err(theirs, float_logits) < 0.02 and rel_err(theirs, ours) < 0.02

    fc = lstmcpp.models.Forecaster(n_features=2, window=12, horizon=3, hidden_size=64, seed=0)
    series = np.random.default_rng(1).standard_normal((100, 2)) * 3 + 5
    fc.fit_scaling(series)
    qf = lstmcpp.quantize(fc, "int8")
    windows = np.stack([series[k : k + 12] for k in (0, 30, 61)]).astype(np.float32)
    got = _session(ort, qf, tmp_path / "fc.onnx").run(None, {"x": windows})[0]
    want = np.stack([fc.forecast(w, 3) for w in windows])
    assert rel_err(got, want) < 0.02

    ac = lstmcpp.models.AttentionClassifier(vocab_size=11, num_classes=4, embedding_dim=5, hidden_size=32,
                                            attention_dim=7, bidirectional=True, seed=0)
    qa = lstmcpp.quantize(ac, "int8")
    ids = np.random.default_rng(2).integers(0, 11, (4, 9))
    lengths = np.array([9, 3, 1, 6], np.int32)
    got_p, got_w = _session(ort, qa, tmp_path / "ac.onnx").run(None, {"ids": ids.astype(np.int64), "lengths": lengths})
    p, weights = ac.predict(ids, lengths)
    assert rel_err(got_p, p) < 0.02 and rel_err(got_w, weights) < 0.02 and not got_w[1, 3:].any()


def test_export_onnx_refuses_what_it_cannot_write(tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(TypeError, match="expected an LSTM, CharLM, Forecaster or AttentionClassifier"):
        lstmcpp.export_onnx(lstmcpp.nn.Linear(3, 4), tmp_path / "x.onnx")
    lm = lstmcpp.models.CharLM("abcd", embedding_dim=4, hidden_size=8, seed=0)
    for scheme in ("bf16", "codebook4"):
        with pytest.raises(ValueError, match=f"its lstm is in {scheme}, which has no ONNX operator"):
            lstmcpp.export_onnx(lstmcpp.quantize(lm, scheme), tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_load_onnx_of_a_foreign_reverse_node_with_lengths(ort):
    """direction="reverse": each sequence read from its last real step, as ONNX Runtime runs it,
    outputs zero past each length; the model exports back to the same direction."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    H, I = 4, 3
    W, R = rng.standard_normal((1, 4 * H, I)).astype(np.float32), rng.standard_normal((1, 4 * H, H)).astype(np.float32)
    B = rng.standard_normal((1, 8 * H)).astype(np.float32)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "lengths"], ["Y", "Y_h", "Y_c"], hidden_size=H, direction="reverse")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("lengths", TensorProto.INT32, None)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
                              initializer=[numpy_helper.from_array(a, n) for a, n in [(W, "W"), (R, "R"), (B, "B")]])
    foreign = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    x = rng.standard_normal((6, 3, I)).astype(np.float32)
    lengths = np.array([6, 2, 4], np.int32)
    y, y_h, y_c = ort.InferenceSession(foreign.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"X": x, "lengths": lengths})
    model = lstmcpp.load_onnx(foreign)
    assert model.reverse and not model.bidirectional
    ours, (h_n, c_n) = model(x, lengths=lengths)
    assert rel_err(ours, y[:, 0]) < 1e-5 and rel_err(h_n, y_h) < 1e-5 and rel_err(c_n, y_c) < 1e-5
    exported = model.export_onnx()
    assert [a.s for n in exported.graph.node if n.op_type == "LSTM" for a in n.attribute if a.name == "direction"] == [b"reverse"]
    with pytest.raises(ValueError, match="reverse model cannot stream"):
        model.stream()
    with pytest.raises(ValueError, match="reverse"):
        model.to_torch()


@pytest.mark.parametrize("season, baseline", [(0, 0), (12, 1), (12, 2), (12, 3), (12, 4), (0, 4)])
def test_a_fitted_forecaster_exports_history_to_forecast_and_quantiles(ort, tmp_path, season, baseline):
    """The window's own units, the network and the chosen baseline, all inside the graph."""
    t = np.arange(400)
    rng = np.random.default_rng(0)
    series = np.stack([5 + np.sin(2 * np.pi * t / 12) + 0.02 * t, np.cos(2 * np.pi * t / 12)], 1) + 0.1 * rng.standard_normal((400, 2))
    fc = lstmcpp.models.Forecaster(n_features=2, window=20, horizon=5, hidden_size=6, seed=0, season=season,
                                   quantiles=(0.2, 0.8))
    fc.fit(series, epochs=2, progress=False, log=None)
    fc.baseline = baseline if season or baseline == 4 else 0  # each baseline's graph, whatever fit chose (4: linear)
    session = _session(ort, fc, tmp_path / "fc.onnx")
    L = fc._history_length()
    histories = np.stack([series[k - L : k] for k in (L, 250, 399)]).astype(np.float32)
    point, bands = session.run(None, {"history": histories})
    for row, q_rows, history in zip(point, bands, histories):
        ours, ours_bands = fc.forecast(history.astype(np.float64), 5, quantiles=(0.2, 0.8))
        np.testing.assert_allclose(row, ours, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(q_rows[0], ours_bands[0.2], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(q_rows[1], ours_bands[0.8], rtol=1e-4, atol=1e-4)
