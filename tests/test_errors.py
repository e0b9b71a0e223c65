"""Bad arguments: each raises a TypeError or ValueError naming the argument, the expected and
the received, and leaves the model as it was."""

import numpy as np
import pytest

import lstmcpp

@pytest.mark.parametrize(
    "kw,error,words",
    [
        (dict(input_size=0), ValueError, "input_size"),
        (dict(hidden_size=-1), ValueError, "hidden_size"),
        (dict(input_size=2.5), TypeError, "input_size"),
        (dict(num_layers=0), ValueError, "num_layers"),
        (dict(proj_size=4), ValueError, "proj_size"),
        (dict(proj_size=-1), ValueError, "proj_size"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(dropout=-0.1), ValueError, "dropout"),
        (dict(proj_clip=1.0), ValueError, "proj_clip"),
        (dict(cell_clip=0.0), ValueError, "cell_clip"),
        (dict(cell_clip=-1.0), ValueError, "cell_clip"),
        (dict(dtype="int32"), TypeError, "dtype"),
        (dict(dtype="float16"), TypeError, "dtype"),
    ],
)
def test_bad_constructor_arguments(kw, error, words):
    args = dict(input_size=3, hidden_size=4)
    args.update(kw)
    with pytest.raises(error, match=words):
        lstmcpp.LSTM(args.pop("input_size"), args.pop("hidden_size"), **args)


@pytest.fixture
def model():
    return lstmcpp.LSTM(3, 4, num_layers=2, seed=0)


@pytest.mark.parametrize(
    "x,error,words",
    [
        (np.zeros((5, 2, 3, 1)), ValueError, r"x: expected a 3-D .* got shape \(5, 2, 3, 1\)"),
        (np.zeros(5), ValueError, r"x: .* got shape \(5,\)"),
        (np.zeros((5, 2, 7)), ValueError, r"x: expected shape \(T, B, 3\), got \(5, 2, 7\)"),
        (np.zeros((0, 2, 3)), ValueError, "T = 0"),
        (np.zeros((5, 0, 3)), ValueError, "B = 0"),
        (np.zeros((5, 2, 3), complex), TypeError, "x: .*complex"),
        (np.array([["a", "b", "c"]]), TypeError, "x: "),
        (np.empty((5, 3), object), TypeError, "x: "),
        ("hello", TypeError, "x: "),
    ],
)
def test_bad_x(model, x, error, words):
    before = model.state_dict()
    with pytest.raises(error, match=words):
        model(x)
    with pytest.raises(error, match=words):
        model.forward(x)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_bad_backward_arguments(model):
    x = np.zeros((5, 2, 3))
    y, _, cache = model.forward(x)
    other = lstmcpp.LSTM(3, 4, num_layers=2)
    _, _, other_cache = other.forward(x)
    with pytest.raises(ValueError, match="cache: it was made by another model"):
        model.backward(other_cache, np.ones_like(y))
    with pytest.raises(TypeError, match="cache"):
        model.backward({"not": "a cache"}, np.ones_like(y))
    with pytest.raises(ValueError, match=r"dy: expected shape \(5, 2, 4\) \(the shape of y\), got \(5, 2, 3\)"):
        model.backward(cache, np.ones((5, 2, 3)))
    with pytest.raises(ValueError, match=r"dh_n: expected shape \(2, 2, 4\)"):
        model.backward(cache, np.ones_like(y), (np.ones((2, 4)), None))
    with pytest.raises(TypeError, match="dy"):
        model.backward(cache, np.ones(y.shape, complex))
    assert not any(g.any() for g in model.grads.values())  # nothing was accumulated


def test_token_input_bad_arguments_are_named():
    model = lstmcpp.LSTM(3, 4, seed=0)
    table = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"ids: every id must be in 0\.\.4, got min 0 and max 5"):
        model.forward_tokens(np.array([[0], [5]]), table)
    with pytest.raises(ValueError, match=r"ids: every id must be in 0\.\.4"):
        model.forward_tokens(np.array([[-1]]), table)
    with pytest.raises(TypeError, match="ids: expected integers"):
        model.forward_tokens(np.zeros((2, 1)), table)
    with pytest.raises(ValueError, match=r"embedding: expected shape \(V, 3\)"):
        model.forward_tokens(np.zeros((2, 1), int), np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match=r"ids: expected a 2-D"):
        model.forward_tokens(np.zeros((2, 1, 1), int), table)
    # the core checks too, whatever calls it
    with pytest.raises(ValueError, match=r"ids\[1, 0\] = 5 is outside 0\.\.4"):
        model._core.forward(np.array([[0], [5]], np.int32), None, None, None, [], True, table)
    with pytest.raises(TypeError, match="ids: expected a C-contiguous numpy array of int32"):
        model._core.forward(np.zeros((2, 1), np.int64), None, None, None, [], True, table)
    y, _, cache = model.forward_tokens(np.array([1, 2, 3]), table)  # unbatched (T,)
    assert y.shape == (3, 4)
    d_table, (dh0, _) = model.backward(cache, np.ones((3, 4), np.float32))
    assert d_table.shape == (5, 3) and dh0.shape == (1, 4)


def test_without_their_peers_the_cluster_modules_say_what_to_install(monkeypatch):
    import importlib
    import sys

    from lstmcpp import distributed

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "lstmcpp.dask", raising=False)
    with pytest.raises(ImportError, match=r'lstmcpp.dask needs dask and distributed .*pip install "lstmcpp\[dask\]"'):
        importlib.import_module("lstmcpp.dask")
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch.distributed", None)
    with pytest.raises(ImportError, match="needs PyTorch .*pip install torch --index-url https://download.pytorch.org/whl/cpu"):
        distributed.init("gloo", rank=0, world_size=1, master_addr="127.0.0.1", master_port=1)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match="needs mpi4py: pip install mpi4py"):
        distributed.init("mpi")
