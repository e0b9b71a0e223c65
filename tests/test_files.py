"""Model files: the native format (bit-exact round trips, no code run on load, clear errors for
damaged files) and pickling."""

import pickle
import zipfile

import numpy as np
import pytest

import lstmcpp

def inputs(model, T=7, B=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, model.input_size) if model.batch_first else (T, B, model.input_size)).astype(model.dtype)
    lengths = np.array([T, 3, T - 1, 1][:B])
    return x, lengths


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
