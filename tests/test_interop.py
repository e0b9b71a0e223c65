"""Moving models in and out: PyTorch, Keras 3, ONNX, the native file format and pickle."""

import os
import pickle
import zipfile

import numpy as np
import pytest

import lstmcpp

from conftest import rel_err

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on its PyTorch backend, where installed


def inputs(model, T=7, B=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, model.input_size) if model.batch_first else (T, B, model.input_size)).astype(model.dtype)
    lengths = np.array([T, 3, T - 1, 1][:B])
    return x, lengths


# ------------------------------------------------------------------------------------------------
# native files


CONFIGS = {
    "plain": dict(),
    "everything": dict(num_layers=2, bidirectional=True, peepholes=True, proj_size=3, cell_clip=2.0,
                       proj_clip=1.5, batch_first=True, dropout=0.1, forget_bias=1.0),
    "float64": dict(num_layers=2, dtype="float64", bias=False),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_native_round_trip_is_bit_exact(tmp_path, name):
    model = lstmcpp.LSTM(5, 6, seed=3, **CONFIGS[name])
    path = tmp_path / "model.npz"
    lstmcpp.save(model, path)
    loaded = lstmcpp.load(path)
    assert type(loaded) is lstmcpp.LSTM and loaded.get_config() == model.get_config()
    for k, v in model.state_dict().items():
        assert loaded.state_dict()[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    x, lengths = inputs(model)
    np.testing.assert_array_equal(loaded(x, lengths=lengths)[0], model(x, lengths=lengths)[0])


def test_native_file_runs_no_code_and_holds_json(tmp_path):
    path = tmp_path / "m.npz"
    lstmcpp.save(lstmcpp.LSTM(2, 3), path)
    with zipfile.ZipFile(path) as z:
        assert "__header__.npy" in z.namelist()
    with np.load(path, allow_pickle=False) as npz:  # readable without pickle
        assert b'"format": "lstmcpp"' in npz["__header__"].tobytes()


def _rewrite(path, **changes):
    """Rewrite the file with the header fields changed (keeping the arrays)."""
    import json

    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["__header__"].tobytes())
        arrays = {k: npz[k] for k in npz.files if k != "__header__"}
    header.update(changes)
    with open(path, "wb") as f:
        np.savez(f, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)


@pytest.mark.parametrize("damage,words", [
    ("truncate", "not a readable lstmcpp model file"),
    ("garbage", "not a readable lstmcpp model file"),
    ("flip_a_weight", "checksum mismatch"),
    ("version", "file format version 99"),
    ("format", "not an lstmcpp model file"),
    ("kind", "unknown model kind"),
    ("no_header", "no header"),
])
def test_bad_native_files_raise_clear_errors(tmp_path, damage, words):
    path = tmp_path / "m.npz"
    model = lstmcpp.LSTM(3, 4, num_layers=2)
    lstmcpp.save(model, path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01garbage" * 100)
    elif damage == "flip_a_weight":
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["weight_ih_l1"] = arrays["weight_ih_l1"].copy()
        arrays["weight_ih_l1"][0, 0] += 1.0
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif damage == "version":
        _rewrite(path, version=99)
    elif damage == "format":
        _rewrite(path, format="something-else")
    elif damage == "kind":
        _rewrite(path, kind="Transformer")
    elif damage == "no_header":
        with open(path, "wb") as f:
            np.savez(f, **model.state_dict())
    with pytest.raises(ValueError, match=words):
        lstmcpp.load(path)


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="cannot save a dict"):
        lstmcpp.save({}, tmp_path / "x.npz")


# ------------------------------------------------------------------------------------------------
# pickle


@pytest.mark.parametrize("name", CONFIGS)
def test_pickle_round_trip_is_bit_exact(name):
    model = lstmcpp.LSTM(5, 6, seed=3, **CONFIGS[name])
    x, lengths = inputs(model)
    y, _, cache = model.forward(x, lengths=lengths)
    model.backward(cache, np.ones_like(y))
    clone = pickle.loads(pickle.dumps(model))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(clone.state_dict()[k], v)
        np.testing.assert_array_equal(clone.grads[k], model.grads[k])
    np.testing.assert_array_equal(clone(x, lengths=lengths)[0], model(x, lengths=lengths)[0])
    # the dropout stream continues where it was
    np.testing.assert_array_equal(clone.forward(x)[0], model.forward(x)[0])


def test_pickle_through_multiprocessing():
    import multiprocessing as mp

    model = lstmcpp.LSTM(3, 4, num_layers=2, seed=0)
    x = np.ones((5, 2, 3), np.float32)
    with mp.get_context("spawn").Pool(1) as pool:
        y = pool.apply(_run_model, (model, x))
    np.testing.assert_array_equal(y, model(x)[0])


def _run_model(model, x):
    return model(x)[0]


# ------------------------------------------------------------------------------------------------
# PyTorch

TORCH_CONFIGS = {
    "plain": dict(),
    "no_bias": dict(bias=False),
    "deep_bidirectional": dict(num_layers=2, bidirectional=True, batch_first=True),
    "projection": dict(num_layers=2, bidirectional=True, proj_size=3),
}


@pytest.mark.parametrize("name", TORCH_CONFIGS)
def test_from_torch_and_back(name):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(5, 6, **TORCH_CONFIGS[name])
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


# ------------------------------------------------------------------------------------------------
# Keras 3 (on the PyTorch backend)


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


# ------------------------------------------------------------------------------------------------
# ONNX

ONNX_CONFIGS = {
    "plain": dict(),
    "deep_bidirectional_peepholes": dict(num_layers=2, bidirectional=True, peepholes=True),
    "batch_first_no_bias": dict(num_layers=2, batch_first=True, bias=False),
}


@pytest.fixture
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", ONNX_CONFIGS)
def test_export_onnx_runs_in_onnxruntime_with_the_same_outputs(ort, tmp_path, name):
    model = lstmcpp.LSTM(5, 6, seed=1, **ONNX_CONFIGS[name])
    path = tmp_path / "m.onnx"
    model.export_onnx(path)
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


def test_load_onnx_of_a_foreign_single_node(ort):
    """A hand-built node in ONNX's own conventions (gate order i,o,f,c; P as i,o,f; B as Wb,Rb),
    run by ONNX Runtime; and the same node with layout=1 (batch-major), which ORT cannot run."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    H, I = 4, 3
    W, R = rng.standard_normal((1, 4 * H, I)).astype(np.float32), rng.standard_normal((1, 4 * H, H)).astype(np.float32)
    B, P = rng.standard_normal((1, 8 * H)).astype(np.float32), rng.standard_normal((1, 3 * H)).astype(np.float32)
    weights = [numpy_helper.from_array(a, n) for a, n in [(W, "W"), (R, "R"), (B, "B"), (P, "P")]]

    def node_model(layout):
        node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y", "Y_h"], hidden_size=H, layout=layout)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
                                   helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)], initializer=weights)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])

    x = rng.standard_normal((5, 2, I)).astype(np.float32)  # (T,B,I)
    y, y_h = ort.InferenceSession(node_model(0).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    model = lstmcpp.load_onnx(node_model(0))
    assert model.peepholes and not model.batch_first
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
    for attrs, words in [(dict(clip=1.0), "clip=1.0"), (dict(input_forget=1), "input_forget=1"),
                         (dict(direction="reverse"), "reverse"), (dict(activations=["Relu", "Tanh", "Tanh"]), "activations")]:
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
