"""Quantized inference: the int8 kernels' integers exactly as the NumPy reference's, a
QuantizedLSTM against the reference of the quantized arithmetic over the feature grid, under
every instruction set, and against its dequantized float model; files, pickling and bad input."""

import os
import pickle
import tempfile
import warnings

import numpy as np
import pytest

import lstmcpp
from lstmcpp import _core, reference

from conftest import GRID, QUANTIZED_GRID, make_inputs, on_one_and_two_threads, assert_bitwise_equal, rel_err, scale_weights


# ------------------------------------------------------------------------------------------------
# the kernels' integers


def awkward_rows(rng, K):
    """Rows that test the rounding: random, all zeros, ties at .5 (amax 127 makes the scale 1),
    huge, tiny, and one negative extreme."""
    rows = [rng.standard_normal(K), np.zeros(K), 1e30 * rng.standard_normal(K), 1e-30 * rng.standard_normal(K)]
    tie = np.full(K, 0.5) + np.arange(K) % 5
    tie[0] = 127.0
    rows += [tie, -tie]
    return np.array(rows, np.float32)


@pytest.mark.parametrize("K", [1, 7, 16, 33, 256])
def test_activation_quantization_is_the_references_exactly(isa, K):
    a = awkward_rows(np.random.default_rng(K), K)
    q, scale = _core.quantize_rows_f32(a)
    q_ref, scale_ref = reference.quantize_activations_int8(a)
    assert q.shape == (a.shape[0], (K + 15) // 16 * 16)
    np.testing.assert_array_equal(q[:, :K], q_ref)
    assert not q[:, K:].any()  # the padding is zeros
    np.testing.assert_array_equal(scale, scale_ref)


def test_rows_holding_nan_or_inf_give_nan_scales_and_zeros(isa):
    a = np.ones((3, 20), np.float32)
    a[0, 3], a[1, 19] = np.nan, np.inf
    q, scale = _core.quantize_rows_f32(a)
    q_ref, scale_ref = reference.quantize_activations_int8(a)
    assert np.isnan(scale[:2]).all() and np.isnan(scale_ref[:2]).all() and scale[2] == scale_ref[2]
    assert not q[:2].any() and not q_ref[:2].any()


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (1, 9, 33), (1, 300, 70), (2, 290, 40), (3, 64, 256), (5, 7, 500),
                                   (6, 200, 19), (9, 33, 64), (16, 40, 100), (17, 130, 7), (40, 33, 129),
                                   (64, 300, 64), (23, 17, 1100)])
@pytest.mark.parametrize("lowest", [-128, -127])
@pytest.mark.parametrize("pad", [16, 64])
def test_int8_products_are_exact_integers(isa, M, N, K, lowest, pad):
    """Every kernel's integer sums are exact, with -128 weights (PyTorch's int8; the AVX2 kernel
    multiplies another way when a matrix holds one) and without, the largest sums included, for
    every range of rows a thread may be given (ranges that start and end inside a block of 16
    rows or a superblock of 128, a last superblock part full, and row tiles of every height: AMX's
    tiles of 16 rows and fewer, in pairs and alone, where the activations are padded for them)."""
    rng = np.random.default_rng(M * N + K)
    Kp = (K + pad - 1) // pad * pad
    q = np.zeros((M, Kp), np.int16)
    q[:, :K] = rng.integers(-127, 128, (M, K))
    w = rng.integers(lowest, 128, (N, K)).astype(np.int8)
    q[0, :K], w[0] = 127, lowest  # the largest sums
    if M > 1:
        q[1, :K], w[-1] = -127, lowest
    exact = q[:, :K].astype(np.int64) @ w.astype(np.int64).T
    a_scale, w_scale = rng.random(M).astype(np.float32), rng.random(N).astype(np.float32)
    ones = np.ones(M, np.float32), np.ones(N, np.float32)
    np.testing.assert_array_equal(_core.gemm_nt_s8_f32(q, ones[0], w, ones[1], 0, N), exact.astype(np.float32))
    scaled = exact.astype(np.float32) * (a_scale[:, None] * w_scale[None, :])
    np.testing.assert_array_equal(_core.gemm_nt_s8_f32(q, a_scale, w, w_scale, 0, N), scaled)
    for first, rows in {(N // 3, N - N // 3), (N // 5, (N + 1) // 2), (N - 1, 1), (0, 0)}:
        part = _core.gemm_nt_s8_f32(q, a_scale, w, w_scale, first, rows)
        np.testing.assert_array_equal(part, scaled[:, first:first + rows])


# ------------------------------------------------------------------------------------------------
# the layer


SCHEMES = ["int8", "bf16", "codebook4", "codebook8"]
FLOAT_SCHEMES = ["bf16", "codebook4", "codebook8"]  # float32 arithmetic on decoded weights
# how far each format's layer may be from the NumPy reference of its arithmetic: bf16 is float32
# arithmetic (rounding only); int8 rounds activations, and the float32 gate math against NumPy's
# can move one to the next integer, so its bound is a few quantization steps
REFERENCE_TOL = {"int8": 2e-3, "bf16": 1e-4, "codebook4": 1e-4, "codebook8": 1e-4}


def quantized_pair(name, seed=1, I=7, H=13, scheme="int8"):
    model = lstmcpp.LSTM(I, H, **{"seed": seed, **GRID[name]})
    scale_weights(model, 3.0)  # engage the clips
    return model, lstmcpp.quantize(model, scheme)


def quantized_reference(q, x, state, lengths):
    """The NumPy reference of the quantized arithmetic, in float32 as the core runs."""
    unbatched = np.ndim(x) == 2
    x3 = np.asarray(x, np.float32)
    x3 = x3[:, None] if unbatched else (x3.transpose(1, 0, 2) if q.batch_first else x3)
    h0 = c0 = None
    if state is not None:
        h0, c0 = (np.asarray(s, np.float32) for s in state)
        if unbatched:
            h0, c0 = h0[:, None], c0[:, None]
    lens = None if lengths is None else np.atleast_1d(lengths)
    cfg = reference.Config.of(q.dequantize())
    y, (h, c), _ = reference.forward(cfg, q.quantized_params(), x3, h0, c0, lens)
    if unbatched:
        return y[:, 0], h[:, 0], c[:, 0]
    return (y.transpose(1, 0, 2) if q.batch_first else y), h, c


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", QUANTIZED_GRID)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_quantized_lstm_matches_the_reference_of_its_format(isa, name, with_lengths, scheme):
    model, q = quantized_pair(name, scheme=scheme)
    x, state, lengths = make_inputs(model, with_lengths=with_lengths)
    y, (h, c) = q(x, state, lengths=lengths)
    y_ref, h_ref, c_ref = quantized_reference(q, x, state, lengths)
    tol = REFERENCE_TOL[scheme]
    if scheme != "int8":
        # float32 arithmetic throughout: as close as the float32 model of the decoded weights comes
        # to the same float32 reference (layer norm with gains of 3 amplifies the summation order
        # to 1.4e-4 there)
        y_f, (h_f, c_f) = q.dequantize()(x, state, lengths=lengths)
        tol = max(tol, 2 * max(rel_err(a, b, floor=1e-2) for a, b in [(y_f, y_ref), (h_f, h_ref), (c_f, c_ref)]))
    for got, want in [(y, y_ref), (h, h_ref), (c, c_ref)]:
        assert rel_err(got, want, floor=1e-2) < tol


@pytest.mark.parametrize("scheme", FLOAT_SCHEMES)
@pytest.mark.parametrize("name", ["plain", "everything"])
def test_float_formats_equal_their_dequantized_model_to_float32_rounding(isa, products, name, scheme):
    model, q = quantized_pair(name, scheme=scheme)
    x, state, lengths = make_inputs(model, T=12, B=9)
    y, (h, c) = q(x, state, lengths=lengths)
    y_f, (h_f, c_f) = q.dequantize()(x, state, lengths=lengths)
    for got, want in [(y, y_f), (h, h_f), (c, c_f)]:
        assert rel_err(got, want, floor=1e-2) < 1e-5


@pytest.mark.parametrize("scheme", ["codebook4", "codebook8"])
@pytest.mark.parametrize("I", [16, 33, 70])
def test_a_codebook_input_product_of_many_rows_decodes_every_weight(isa, scheme, I):
    """Many rows of input (T x B >= 32) decode W_ih once per call, 32 weights a block under each
    instruction set, then run the BLAS: the decoded weights are the dequantized model's exactly,
    so the input projections agree to float32 rounding, first and second halves of every block
    and the last, partial one included."""
    q = lstmcpp.quantize(lstmcpp.LSTM(I, 21, seed=3), scheme)
    x = np.random.default_rng(4).standard_normal((8, 6, I)).astype(np.float32)
    y, (h, c) = q(x)
    y_f, (h_f, c_f) = q.dequantize()(x)
    for got, want in [(y, y_f), (h, h_f), (c, c_f)]:
        assert rel_err(got, want, floor=1e-2) < 1e-5


def test_bfloat16_rounding_is_to_nearest_even():
    w = np.array([1.0, 1.00390625, 1.01171875, 1.0 + 2**-8 + 2**-20, -2.5, 3.0e38], np.float32)
    bits = reference.to_bfloat16(w).bits
    decoded = reference.Bfloat16Rows(bits).dequantize()
    # 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and goes to the even one (1); 1 + 3*2^-8 lies
    # halfway between 1 + 2^-7 and 1 + 2^-6 and goes to 1 + 2^-6; just past halfway rounds up
    np.testing.assert_array_equal(decoded[:4], np.float32([1.0, 1.0, 1.015625, 1.0078125]))
    assert decoded[4] == -2.5 and abs(decoded[5] - 3.0e38) / 3.0e38 < 2**-8


@pytest.mark.parametrize("name", ["plain", "peepholes", "stacked"])
def test_quantized_lstm_is_close_to_its_dequantized_float_model(name):
    """Only the activations' rounding separates them (measured: 1-2% after 20 steps with weights
    scaled 3x; the clipped configurations, whose outputs sit at a small clip, are checked exactly
    against the int8 reference above)."""
    model, q = quantized_pair(name)
    x, state, lengths = make_inputs(model, T=20, B=5)
    y, (h, c) = q(x, state, lengths=lengths)
    y_f, (h_f, c_f) = q.dequantize()(x, state, lengths=lengths)
    for got, want in [(y, y_f), (h, h_f), (c, c_f)]:
        assert rel_err(got, want) < 0.03


def test_unbatched_input_and_the_streaming_shape():
    model, q = quantized_pair("two_layers")
    x = np.random.default_rng(0).standard_normal((6, 7)).astype(np.float32)
    y, (h, c) = q(x)
    y_ref, h_ref, c_ref = quantized_reference(q, x, None, None)
    assert y.shape == (6, 13) and h.shape == (2, 13)
    assert rel_err(y, y_ref, floor=1e-2) < 2e-3
    # one step at a time with the state carried equals the whole sequence
    state, ys = None, []
    for t in range(6):
        yt, state = q(x[t : t + 1], state)
        ys.append(yt)
    np.testing.assert_allclose(np.concatenate(ys), y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("B", [1, 5, 19, 37])
def test_results_do_not_depend_on_the_thread_count(isa, scheme, B):
    """Two threads split the hidden units (B = 1) or the batch (B = 5, from one row a thread, as
    weights this small fit in half of any L2; B = 19; and B = 37, where int8 projects the input
    step by step): the same bits as one."""
    model, q = quantized_pair("everything", I=29, H=53, scheme=scheme)
    x, state, lengths = make_inputs(model, T=12, B=B)
    one, two = on_one_and_two_threads(lambda: [np.array(a) for a in (q(x, state, lengths=lengths)[0],) +
                                              tuple(q(x, state, lengths=lengths)[1])], isa)
    assert_bitwise_equal(one, two)


def test_dequantize_decodes_every_row():
    model, q = quantized_pair("everything")
    decoded = q.dequantize().state_dict()
    for name, w in model.state_dict().items():
        if name.startswith(("weight_ih", "weight_hh", "weight_hr")):
            step = np.abs(w).max(axis=1, keepdims=True) / 127
            assert (np.abs(decoded[name] - w) <= 0.5 * step + 1e-7).all(), name
        else:
            np.testing.assert_array_equal(decoded[name], w)


def test_size():
    model = lstmcpp.LSTM(512, 512, seed=0)
    matrices = [p for n, p in model.state_dict().items() if n.startswith("weight")]
    float_bytes = 4 * sum(p.size for p in matrices)
    q = lstmcpp.quantize(model, "int8")
    assert q.nbytes == sum(p.size + 4 * p.shape[0] for p in matrices)
    assert q.nbytes <= 0.27 * float_bytes
    assert "scheme='int8'" in repr(q) and f"nbytes={q.nbytes:,}" in repr(q)
    b = lstmcpp.quantize(model, "bf16")
    assert b.nbytes == 2 * sum(p.size for p in matrices) and b.nbytes <= 0.52 * float_bytes


def test_a_mogrifiers_matrices_stay_float32_and_count_in_the_size():
    """Layer norm's gains stay float32 beside the biases (not counted); the Mogrifier's matrices
    are weights that stay float32 (4 bytes each, counted)."""
    plain = lstmcpp.LSTM(8, 16, seed=0)
    mog = lstmcpp.LSTM(8, 16, mogrify_rounds=3, mogrify_rank=2, layer_norm=True, seed=0)
    mog.load_state_dict({**mog.state_dict(), **plain.state_dict()})
    extra = sum(p.size for n, p in mog.state_dict().items() if "mogrify" in n)
    assert extra == (8 * 2 + 2 * 16) * 2 + (16 * 2 + 2 * 8)
    for scheme in SCHEMES:
        q = lstmcpp.quantize(mog, scheme)
        assert q.nbytes == lstmcpp.quantize(plain, scheme).nbytes + 4 * extra
        decoded = q.dequantize().state_dict()
        for name, p in mog.state_dict().items():
            if not name.startswith(("weight_ih", "weight_hh")):
                np.testing.assert_array_equal(decoded[name], p)


def test_a_quantized_core_names_a_parameter_it_has_not_or_of_the_wrong_size():
    core = _core.QuantizedModelInt8(4, 6, mogrify_rounds=2, mogrify_rank=3, layer_norm=True)
    with pytest.raises(ValueError, match="weight_mogrify_123456789012345678901_a: not a parameter of this model"):
        core.set_vector(0, "weight_mogrify_123456789012345678901_a", np.zeros(18, np.float32))
    with pytest.raises(ValueError, match="weight_mogrify_3: not a parameter of this model"):
        core.set_vector(0, "weight_mogrify_3", np.zeros(18, np.float32))
    with pytest.raises(ValueError, match="weight_mogrify_1: not a parameter of this model"):
        core.set_vector(0, "weight_mogrify_1", np.zeros(24, np.float32))  # (a rank: factors _a and _b)
    with pytest.raises(ValueError, match="weight_mogrify_1_a: expected 12 values, got 24"):
        core.set_vector(0, "weight_mogrify_1_a", np.zeros(24, np.float32))  # Q_1 (I=4, P=6): a (4,3)
    with pytest.raises(ValueError, match="ln_weight_c: expected 6 values, got 24"):
        core.set_vector(0, "ln_weight_c", np.zeros(24, np.float32))
    plain = _core.QuantizedModelInt8(4, 6)
    with pytest.raises(ValueError, match="ln_weight_ih: not a parameter of this model"):
        plain.set_vector(0, "ln_weight_ih", np.zeros(24, np.float32))


def codebook_nbytes(shapes, scheme):
    """What the codebook formats store for matrices of these shapes: the indices (whole blocks of
    32 a row: 16 bytes in codebook4, 32 in codebook8) and the books."""
    total = 0
    for name, (N, K) in shapes:
        blocks = (K + 31) // 32
        if scheme == "codebook4":
            total += N * 16 * blocks + N * 16 * 4
        else:
            total += N * 32 * blocks + (1 if name.startswith("weight_hr") else 4) * 256 * 4
    return total


@pytest.mark.parametrize("scheme", ["codebook4", "codebook8"])
def test_codebook_sizes(scheme):
    model = lstmcpp.LSTM(24, 40, proj_size=16, seed=0)
    shapes = [(n, p.shape) for n, p in model.state_dict().items() if n.startswith("weight")]
    assert lstmcpp.quantize(model, scheme).nbytes == codebook_nbytes(shapes, scheme)
    # at H = 512 (too slow to quantize in a test: k-means over 1M weights), against float32
    H = 512
    big = [("weight_ih_l0", (4 * H, H)), ("weight_hh_l0", (4 * H, H))]
    goal = {"codebook4": 0.17, "codebook8": 0.27}[scheme]
    assert codebook_nbytes(big, scheme) <= goal * 4 * sum(N * K for _, (N, K) in big)


# ------------------------------------------------------------------------------------------------
# files and pickling


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", ["everything", "layer_norm_everything", "mogrifier_everything", "all_variants"])
def test_file_and_pickle_round_trips_are_bit_exact(tmp_path, scheme, name):
    model, q = quantized_pair(name, scheme=scheme)
    x, state, lengths = make_inputs(model)
    y, _ = q(x, state, lengths=lengths)
    lstmcpp.save(q, tmp_path / "q.npz")
    for loaded in (lstmcpp.load(tmp_path / "q.npz"), pickle.loads(pickle.dumps(q))):
        assert type(loaded) is lstmcpp.QuantizedLSTM and loaded.scheme == scheme
        assert loaded.get_config() == q.get_config() and loaded.nbytes == q.nbytes
        np.testing.assert_array_equal(loaded(x, state, lengths=lengths)[0], y)


# ------------------------------------------------------------------------------------------------
# bad input


def test_quantize_refuses_what_it_cannot_do():
    model = lstmcpp.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"scheme: expected one of \['int8', 'bf16', 'codebook4', 'codebook8'\], got 'int4'"):
        lstmcpp.quantize(model, "int4")
    with pytest.raises(TypeError, match="model: expected an lstmcpp.LSTM or a model of lstmcpp.models, got dict"):
        lstmcpp.quantize({}, "int8")
    model.parameters()[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="weight_hh_l0 holds NaN or Inf"):
        lstmcpp.quantize(model, "int8")


@pytest.mark.parametrize("call", [
    lambda m: m(np.zeros((5, 2, 4))),                                   # wrong input size
    lambda m: m(np.zeros((5, 2, 3), np.complex64)),                     # complex
    lambda m: m(np.zeros((0, 2, 3))),                                   # T = 0
    lambda m: m(np.zeros((5, 2, 3)), lengths=[6, 1]),                   # a length past T
    lambda m: m(np.zeros((5, 2, 3)), lengths=[1.0, 2.0]),               # float lengths
    lambda m: m(np.zeros((5, 2, 3)), (np.zeros((1, 2, 4)), np.zeros((1, 3, 4)))),  # state's batch
    lambda m: m(np.zeros((5, 2, 3)), np.zeros((1, 2, 4))),              # state not a pair
])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_bad_input_raises_what_lstm_raises(call, scheme):
    model = lstmcpp.LSTM(3, 4, seed=0)
    q = lstmcpp.quantize(model, scheme)
    with pytest.raises((ValueError, TypeError)) as expected:
        call(model)
    with pytest.raises(type(expected.value)) as got:
        call(q)
    assert str(got.value) == str(expected.value)


def test_arrays_with_wrong_shapes_or_values_are_refused():
    q = lstmcpp.quantize(lstmcpp.LSTM(3, 4, seed=0), "int8")
    config, arrays = q._to_native()
    bad = dict(arrays, **{"weight_hh_l0.q": arrays["weight_hh_l0.q"][:, :2].copy()})
    with pytest.raises(ValueError, match=r"arrays\['weight_hh_l0.q'\]: expected shape \(16, 4\), got \(16, 2\)"):
        lstmcpp.QuantizedLSTM(config["lstm"], bad)
    bad = dict(arrays, **{"weight_ih_l0.q": np.full((16, 3), 1, np.int16)})
    with pytest.raises(TypeError, match=r"arrays\['weight_ih_l0.q'\]: expected dtype int8, got int16"):
        lstmcpp.QuantizedLSTM(config["lstm"], bad)


# ------------------------------------------------------------------------------------------------
# accuracy against the other int8 LSTMs


def float_and_int8_errors():
    """A random model and input, its float32 output, and lstmcpp's int8 root-mean-square error."""
    H, T, B = 64, 40, 3
    model = lstmcpp.LSTM(H, H, seed=0)
    x = np.random.default_rng(1).standard_normal((T, B, H)).astype(np.float32)
    y32, _ = model(x)

    def rmse(y):
        return float(np.sqrt(np.mean((np.asarray(y, np.float64) - y32) ** 2)))

    return model, x, rmse, rmse(lstmcpp.quantize(model, "int8")(x)[0])


def test_int8_error_is_no_larger_than_pytorchs_dynamic_int8():
    torch = pytest.importorskip("torch")
    model, x, rmse, ours = float_and_int8_errors()
    peer = torch.nn.LSTM(model.input_size, model.hidden_size)
    peer.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated
        # quantize_dynamic swaps a module's children, not the module itself: give it a parent
        quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(peer), {torch.nn.LSTM}, dtype=torch.qint8)[0]
    assert type(quantized) is not torch.nn.LSTM  # it really is the quantized module
    with torch.inference_mode():
        theirs = rmse(quantized(torch.from_numpy(x))[0].numpy())
    assert 0 < ours <= theirs, (ours, theirs)


def test_int8_error_is_no_larger_than_onnxruntimes_dynamic_int8():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, x, rmse, ours = float_and_int8_errors()
    with tempfile.TemporaryDirectory() as tmp:
        plain, int8 = os.path.join(tmp, "lstm.onnx"), os.path.join(tmp, "lstm_int8.onnx")
        model.export_onnx(plain, state=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(plain, int8, weight_type=QuantType.QInt8)
        session = ort.InferenceSession(int8, providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, x.shape[1], model.hidden_size), np.float32)
    theirs = rmse(session.run(None, {"x": x, "h0": zeros, "c0": zeros})[0])
    assert 0 < ours <= theirs, (ours, theirs)


# ------------------------------------------------------------------------------------------------
# the models


def small_models():
    from lstmcpp.models import AttentionClassifier, CharLM, Forecaster

    rng = np.random.default_rng(0)
    lm = CharLM("abcdefgh ", embedding_dim=8, hidden_size=24, seed=0)
    lm_batch = next(iter(lm.batches(lm.encode("abc defg hab cde " * 20), 4, 10, seed=0)()))
    forecaster = Forecaster(window=8, hidden_size=16, seed=0)
    series = np.sin(np.arange(200) * 0.1)
    forecaster.fit_scaling(series)
    classifier = AttentionClassifier(12, 3, embedding_dim=8, hidden_size=16, seed=0)
    ids = rng.integers(0, 12, (5, 7))
    return [
        (lm, lambda m: (m.reset_state(), m.evaluate(lm_batch)[0])[1]),  # evaluate carries its state: start afresh
        (forecaster, lambda m: m.forecast(series[:50], 3)),
        (classifier, lambda m: m.predict(ids, lengths=np.array([7, 3, 5, 1, 7]))[0]),
    ]


@pytest.mark.parametrize("index", range(3))
def test_quantized_models_keep_their_class_and_inference(tmp_path, index):
    model, infer = small_models()[index]
    q = lstmcpp.quantize(model, "int8")
    assert type(q) is type(model) and type(q.lstm) is lstmcpp.QuantizedLSTM
    assert type(model.lstm) is lstmcpp.LSTM  # the original is untouched
    assert rel_err(infer(q), infer(model)) < 0.02
    lstmcpp.save(q, tmp_path / "model.npz")
    loaded = lstmcpp.load(tmp_path / "model.npz")
    assert type(loaded.lstm) is lstmcpp.QuantizedLSTM
    np.testing.assert_array_equal(infer(loaded), infer(q))
    with pytest.raises(TypeError, match="runs inference only"):
        q.lstm.forward(np.zeros((2, 1, q.lstm.input_size), np.float32))


# ------------------------------------------------------------------------------------------------
# PyTorch's dynamic-quantized LSTM


@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True, batch_first=True), dict(num_layers=3)])
def test_from_torch_keeps_a_dynamic_quantized_lstms_int8_weights(config):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    peer = torch.nn.LSTM(6, 9, **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated
        quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(peer), {torch.nn.LSTM}, dtype=torch.qint8)[0]
    q = lstmcpp.LSTM.from_torch(quantized)
    assert type(q) is lstmcpp.QuantizedLSTM and q.scheme == "int8" and q.batch_first == peer.batch_first
    # its weights are torch's integers times torch's scale, exactly
    packed = quantized._all_weight_values[0].param.__getstate__()[0][4][0]
    w, _ = torch.ops.quantized.linear_unpack(packed)
    np.testing.assert_array_equal(q.dequantize().state_dict()["weight_ih_l0"], w.dequantize().numpy())
    x = np.random.default_rng(0).standard_normal((5, 4, 6) if peer.batch_first else (4, 5, 6)).astype(np.float32)
    with torch.inference_mode():
        theirs = quantized(torch.from_numpy(x))[0].numpy()
    y, _ = q(x)
    # the same weights; the activations are rounded differently (ours per row, theirs per tensor)
    assert rel_err(y, theirs) < 0.05
    assert rel_err(y, q.dequantize()(x)[0]) < 0.03


# ------------------------------------------------------------------------------------------------
# ONNX Runtime's DynamicQuantizeLSTM


@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True, peepholes=True)])
def test_load_onnx_keeps_onnxruntimes_int8_weights(tmp_path, config):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = lstmcpp.LSTM(6, 8, seed=0, **config)
    model.export_onnx(tmp_path / "lstm.onnx", lengths=True, state=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(tmp_path / "lstm.onnx"), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8)
    q = lstmcpp.load_onnx(tmp_path / "int8.onnx")
    assert type(q) is lstmcpp.QuantizedLSTM and q.get_config()["num_layers"] == model.num_layers
    # the first layer's W: ONNX Runtime's integers (D, I, 4H) in gate order i, o, f, c, times its scale
    graph = onnx.load(tmp_path / "int8.onnx").graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    node = next(n for n in graph.node if n.op_type == "DynamicQuantizeLSTM")
    W = inits[node.input[1]][0].T.astype(np.float32) * inits[node.input[8]][0]
    H = 8
    ours_from_onnx = [0, 2, 3, 1]
    W = np.concatenate([W[k * H : (k + 1) * H] for k in ours_from_onnx])
    np.testing.assert_array_equal(q.dequantize().state_dict()["weight_ih_l0"], W)
    # on the same weights, our output is as close to the float model's as ONNX Runtime's is (it
    # rounds each step's activations per tensor, with an 8-bit zero point; we per row, symmetric),
    # in root-mean-square error over enough outputs for one unlucky element not to decide it
    x = np.random.default_rng(0).standard_normal((30, 16, 6)).astype(np.float32)
    DL = model.num_layers * model.num_directions
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    zeros = np.zeros((DL, 16, 8), np.float32)
    theirs = session.run(None, {"x": x, "lengths": np.full(16, 30, np.int32), "h0": zeros, "c0": zeros})[0]
    y32 = model(x)[0]
    rms = lambda y: np.sqrt(np.mean((y.astype(np.float64) - y32) ** 2))  # noqa: E731
    assert rms(q(x)[0]) <= rms(theirs)
    assert rel_err(q(x)[0], y32) < 0.05


# ------------------------------------------------------------------------------------------------
# the codebooks


def test_kmeans_is_seeded_and_beats_an_even_grid():
    values = np.random.default_rng(0).standard_normal(3000) ** 3  # heavy tails: an even grid wastes levels
    centers, index = reference.kmeans_1d(values, 16, seed=5)
    again, index_again = reference.kmeans_1d(values, 16, seed=5)
    np.testing.assert_array_equal(centers, again)
    np.testing.assert_array_equal(index, index_again)
    assert centers.shape == (16,) and (np.diff(centers) >= 0).all() and index.max() < 16
    grid = np.linspace(values.min(), values.max(), 16)
    on_grid = grid[np.abs(values[:, None] - grid[None, :]).argmin(axis=1)]
    assert np.mean((centers[index] - values) ** 2) < 0.5 * np.mean((on_grid - values) ** 2)


@pytest.mark.parametrize("scheme,size", [("codebook4", 16), ("codebook8", 256)])
def test_codebooks_hold_every_weight_of_their_rows(scheme, size):
    model = lstmcpp.LSTM(20, 24, proj_size=10, seed=0)
    q = lstmcpp.quantize(model, scheme, seed=3)
    params = q.quantized_params()
    for name, w in model.state_dict().items():
        if not name.startswith("weight") or name.startswith("weight_peephole"):
            continue
        rows = params[name]
        assert rows.books.shape[1] == size and rows.indices.max() < size
        per_book = rows.rows_per_book
        assert per_book == (1 if size == 16 else (w.shape[0] if name.startswith("weight_hr") else w.shape[0] // 4))
        # every weight was replaced by the nearest value of its book
        decoded = rows.dequantize()
        for b in range(rows.books.shape[0]):
            block = slice(b * per_book, (b + 1) * per_book)
            nearest = np.abs(w[block][..., None] - rows.books[b]).min(axis=-1)
            np.testing.assert_allclose(np.abs(decoded[block] - w[block]), nearest, rtol=0, atol=1e-7)
    same = lstmcpp.quantize(model, scheme, seed=3).quantized_params()
    np.testing.assert_array_equal(same["weight_hh_l0"].books, params["weight_hh_l0"].books)


# ------------------------------------------------------------------------------------------------
# training the codebooks' values


@pytest.mark.parametrize("scheme", ["codebook4", "codebook8"])
def test_a_book_values_gradient_is_the_sum_of_its_weights_gradients(scheme):
    model = lstmcpp.LSTM(6, 10, num_layers=2, peepholes=True, seed=0)
    q = lstmcpp.quantize(model, scheme)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 6)).astype(np.float32)
    dy = rng.standard_normal((7, 3, 10)).astype(np.float32)
    q.zero_grad()
    y, _, cache = q.forward(x)
    q.backward(cache, dy)
    decoded = q.dequantize()
    decoded.zero_grad()
    _, _, decoded_cache = decoded.forward(x)
    decoded.backward(decoded_cache, dy)
    params = q.quantized_params()
    for name, g in decoded.grads.items():
        if name.startswith(("weight_ih", "weight_hh")):
            rows = params[name]
            expected = np.zeros_like(rows.books)
            book_of_row = np.arange(rows.indices.shape[0]) // rows.rows_per_book
            np.add.at(expected, (book_of_row[:, None], rows.indices), g)
            np.testing.assert_array_equal(q.grads[name + ".book"], expected)
        else:
            np.testing.assert_array_equal(q.grads[name], g)
    assert set(q.grads) == {n for n, _ in q.named_parameters()}


def test_int8_and_bf16_have_nothing_to_train():
    q = lstmcpp.quantize(lstmcpp.LSTM(3, 4, seed=0), "int8")
    assert list(q.named_parameters()) == [] and q.grads == {}
    with pytest.raises(TypeError, match="the codebook formats train their values"):
        q.forward(np.zeros((2, 1, 3), np.float32))


def test_fit_trains_a_codebook_charlms_values_and_keeps_its_indices():
    from lstmcpp.models import CharLM
    from lstmcpp.optim import Adam
    from lstmcpp.train import fit

    text = "the quick brown fox jumps over the lazy dog. " * 40
    lm = CharLM.from_text(text, embedding_dim=8, hidden_size=24, seed=0)
    ids = lm.encode(text)
    q = lstmcpp.quantize(lm, "codebook4", seed=1)
    indices = {k: v.copy() for k, v in q.lstm._arrays.items() if k.endswith(".idx")}
    books = {k: v.copy() for k, v in q.lstm._arrays.items() if k.endswith(".book")}
    batch = next(iter(q.batches(ids, 4, 20, seed=0)()))
    q.reset_state()
    before = q.evaluate(batch)[0]
    fit(q, q.batches(ids, 4, 20, seed=0), epochs=3, optimizer=Adam(q, lr=1e-2), progress=False, log=None)
    q.reset_state()
    after = q.evaluate(batch)[0]
    assert after < before
    for k, v in indices.items():
        np.testing.assert_array_equal(q.lstm._arrays[k], v)  # the indices stay
    assert any(not np.array_equal(q.lstm._arrays[k], v) for k, v in books.items())  # the values trained
    # inference (the C++ core) runs the trained books
    x = np.random.default_rng(0).standard_normal((5, 2, 8)).astype(np.float32)
    assert rel_err(q.lstm(x)[0], q.lstm.dequantize()(x)[0], floor=1e-2) < 1e-5


# ------------------------------------------------------------------------------------------------
# the layers around the LSTM


@pytest.mark.parametrize("scheme", ["int8", "bf16"])
def test_quantized_linear_is_its_formats_product(scheme):
    from lstmcpp import nn
    from lstmcpp.quantize import QuantizedLinear

    rng = np.random.default_rng(0)
    linear = nn.Linear(70, 90, rng=rng)  # 6300 weights
    layer = QuantizedLinear.of(linear, scheme)
    x = rng.standard_normal((3, 5, 70)).astype(np.float32)
    y, _ = layer.forward(x)
    w = linear.params["weight"]
    x2 = x.reshape(-1, 70)
    if scheme == "int8":
        product = reference.int8_product(x2, reference.quantize_rows_int8(w))
    else:
        product = x2 @ reference.to_bfloat16(w).dequantize().T
    want = product.reshape(3, 5, 90) + linear.params["bias"]
    assert y.shape == (3, 5, 90) and rel_err(y, want, floor=1e-2) < 1e-6
    with pytest.raises(TypeError, match="runs inference only"):
        layer.backward(None, y)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_charlms_large_head_is_quantized_with_its_lstm(tmp_path, scheme):
    from lstmcpp.models import CharLM
    from lstmcpp.quantize import QuantizedLinear

    text = "".join(chr(ord("a") + k % 26) + " .,;"[k % 4] for k in range(2000))
    lm = CharLM.from_text(text, embedding_dim=8, hidden_size=160, seed=0)  # head 160 x 30 = 4800 weights
    q = lstmcpp.quantize(lm, scheme)
    assert isinstance(q.head, QuantizedLinear) == (scheme in ("int8", "bf16"))  # a codebook model's head trains
    batch = next(iter(lm.batches(lm.encode(text), 4, 20, seed=0)()))
    lm.reset_state()
    q.reset_state()
    assert rel_err(q.evaluate(batch)[0], lm.evaluate(batch)[0]) < 0.01
    lstmcpp.save(q, tmp_path / "q.npz")
    loaded = lstmcpp.load(tmp_path / "q.npz")
    assert type(loaded.head) is type(q.head)
    loaded.reset_state()
    q.reset_state()
    assert loaded.evaluate(batch)[0] == q.evaluate(batch)[0]


@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True, peepholes=True, batch_first=True)])
def test_an_int8_model_exports_as_onnxruntimes_dynamic_quantize_lstm(tmp_path, config):
    """export_onnx writes an int8 model as DynamicQuantizeLSTM nodes: load_onnx reads back the
    same integers and scales, and ONNX Runtime runs it as close to the float model as we do (it
    rounds the activations its own way)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = lstmcpp.LSTM(6, 8, seed=0, **config)
    q = lstmcpp.quantize(model, "int8")
    lstmcpp.export_onnx(q, tmp_path / "q.onnx")
    back = lstmcpp.load_onnx(tmp_path / "q.onnx")
    assert type(back) is lstmcpp.QuantizedLSTM
    for key in ("input_size", "hidden_size", "num_layers", "bidirectional", "peepholes"):  # (batch_first: a Transpose)
        assert back.get_config()[key] == getattr(model, key), key
    for (name, a), b in zip(q.quantized_params().items(), back.quantized_params().values()):
        for x, y in zip(*(((v.q, v.scale) if hasattr(v, "q") else (v,)) for v in (a, b))):
            np.testing.assert_array_equal(x, y, err_msg=name)
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, 20, 6) if model.batch_first else (20, 4, 6)).astype(np.float32)
    y32 = model(x)[0]
    theirs = session.run(None, {"x": x})[0]
    assert theirs.shape == y32.shape and rel_err(theirs, y32) < 0.05



def test_an_exported_int8_model_holds_uint8_weights_with_zero_point_128(tmp_path):
    """The integers go out as q + 128 with zero point 128 (ONNX Runtime's int8-weight kernel
    saturates on CPUs without VNNI; its uint8 ones are exact everywhere), and load_onnx reads
    them back as q; other zero points, or other integer types, are refused by name."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    q = lstmcpp.quantize(lstmcpp.LSTM(6, 8, seed=0), "int8")
    proto = lstmcpp.export_onnx(q, tmp_path / "q.onnx")
    node = next(n for n in proto.graph.node if n.op_type == "DynamicQuantizeLSTM")
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    W, W_zero = inits[node.input[1]], inits[node.input[9]]
    assert W.dtype == np.uint8 and W_zero.dtype == np.uint8 and np.all(W_zero == 128)
    ours = q.quantized_params()["weight_ih_l0"].q  # (4H, I) in our gate order i, f, g, o; ONNX's is i, o, f, c
    np.testing.assert_array_equal(W[0].T[:8].astype(np.int16) - 128, ours[:8])  # the input gate's rows

    def altered(name, value):
        model = onnx.load(tmp_path / "q.onnx")
        for t in model.graph.initializer:
            if t.name == name:
                t.CopyFrom(numpy_helper.from_array(value, name))
        onnx.save(model, tmp_path / "altered.onnx")
        return tmp_path / "altered.onnx"

    with pytest.raises(ValueError, match="W is uint8 with zero points other than 128"):
        lstmcpp.load_onnx(altered(node.input[9], np.full_like(W_zero, 127)))
    with pytest.raises(ValueError, match="R has dtype int32; expected int8 or uint8"):
        lstmcpp.load_onnx(altered(node.input[2], inits[node.input[2]].astype(np.int32)))
    with pytest.raises(ValueError, match="W has a nonzero zero point"):  # int8 weights as quantize_dynamic writes them
        lstmcpp.load_onnx(altered(node.input[1], (W.astype(np.int16) - 128).astype(np.int8)))

def test_only_int8_has_an_onnx_operator(tmp_path):
    pytest.importorskip("onnx")
    q = lstmcpp.quantize(lstmcpp.LSTM(6, 8, seed=0), "bf16")
    with pytest.raises(ValueError, match="bf16 model has no ONNX operator"):
        lstmcpp.export_onnx(q, tmp_path / "q.onnx")
