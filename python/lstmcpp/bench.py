"""Benchmarks: lstmcpp against the NumPy reference, PyTorch and ONNX Runtime, as ratios.

Every implementation of a case runs on the same weights, the same inputs and the same number of
threads, interleaved in one process (A B C A B C ..., each a block of calls per round, see
_time_interleaved) so machine drift hits all alike; each reports its median. A ratio above 1 means lstmcpp is that many times faster. Peers that are not
installed are skipped with a note. Run it as ``python -m lstmcpp bench [--quick] [--json F]``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

import lstmcpp
from lstmcpp import _core, reference


@dataclass
class Case:
    name: str
    kind: str  # "infer", "steps" (one-step calls, state carried), "pool" (B streams of a pool, one step) or "train"
    T: int
    B: int
    H: int
    proj_size: int = 0
    goal: str = ""
    quick: bool = True
    peers_only: Optional[List[str]] = None  # restrict the peers (e.g. only the NumPy reference)
    scheme: Optional[str] = None  # run lstmcpp.quantize(model, scheme) against float and int8 peers


CASES = [
    Case("stream H256", "infer", 200, 1, 256, goal=">= 2.0x best peer"),
    Case("stream H512", "infer", 100, 1, 512, goal=">= 1.5x best peer"),
    Case("step calls H128", "steps", 100, 1, 128, goal=">= 8x torch LSTMCell"),
    Case("int8 step calls H128", "steps", 100, 1, 128, goal=">= 12x torch LSTMCell", scheme="int8"),
    Case("pool H128", "pool", 1, 256, 128, goal=">= 2x torch gather-LSTMCell-scatter"),
    Case("projection", "infer", 100, 1, 512, proj_size=256, goal=">= 2.0x best peer"),
    Case("batch", "infer", 50, 64, 512, goal=">= 1.0x best peer, >= 85% GEMM rate", quick=False),
    Case("train H256", "train", 100, 32, 256, goal=">= 1.5x torch"),
    Case("train H512", "train", 50, 64, 512, goal=">= 1.2x torch", quick=False),
    Case("vs NumPy", "infer", 200, 1, 256, goal=">= 6x NumPy reference", peers_only=["numpy reference"]),
    Case("int8 stream H256", "infer", 200, 1, 256, goal=">= 1.5x best peer", scheme="int8"),
    Case("int8 stream H512", "infer", 100, 1, 512, goal=">= 1.5x best peer", scheme="int8"),
    Case("int8 batch", "infer", 50, 64, 512, goal=">= 1.2x best peer", scheme="int8", quick=False),
    Case("int8 projection", "infer", 100, 1, 512, proj_size=256, goal=">= 5x torch LSTM", scheme="int8"),
    Case("bf16 stream H256", "infer", 200, 1, 256, goal=">= 1.8x best float32 peer", scheme="bf16"),
    Case("bf16 stream H512", "infer", 100, 1, 512, goal=">= 1.6x best float32 peer", scheme="bf16"),
    Case("codebook4 stream H256", "infer", 200, 1, 256, goal=">= 1.3x best peer", scheme="codebook4"),
    Case("codebook4 stream H512", "infer", 100, 1, 512, goal=">= 1.3x best peer", scheme="codebook4", quick=False),
]


# ------------------------------------------------------------------------------------------------
# the implementations of one case, each a zero-argument callable


def _ours(case: Case, model: lstmcpp.LSTM, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
    if case.kind == "infer":
        return lambda: model(x)
    if case.kind == "pool":  # B of a pool's 1024 streams, one step: their states gathered and scattered
        pool, ids = model.stream_pool(1024), _pool_ids(case)
        y = np.empty((case.B, model.output_size), np.float32)  # as a serving loop reuses its buffer
        return lambda: pool.step(ids, x[0], out=y)
    if case.kind == "train":
        def train():
            y, _, cache = model.forward(x)
            model.backward(cache, dy)
        return train

    # one step per call, as a streaming service gets them: a stream (SPEC §6), its output
    # written into one buffer
    steps = [x[t, 0] for t in range(case.T)] if x.shape[1] == 1 else [x[t] for t in range(case.T)]
    out = np.empty((model.output_size,) if x.shape[1] == 1 else (x.shape[1], model.output_size), np.float32)

    def step_calls():
        stream = model.stream(None if x.shape[1] == 1 else x.shape[1])
        for xt in steps:
            stream.step(xt, out=out)
    return step_calls


def _pool_ids(case: Case) -> np.ndarray:
    return np.sort(np.random.default_rng(1).choice(1024, case.B, replace=False))


def _quantized_peers(case, model, x, threads, notes: List[str]) -> Dict[str, Callable[[], object]]:
    """PyTorch's and ONNX Runtime's dynamic int8 LSTMs on the same weights (each where installed
    and able: neither quantizes a projection). ONNX Runtime's as its documentation advises: its
    int8-weight kernel for CPUs without VNNI saturates (vpmaddubsw), and where that costs accuracy
    it says to quantize with reduce_range=True; so when the int8 model's output is off the float
    model's by far more than ours (measured on a Zen 3: 9.5% against 0.9%), the peer is the
    reduce_range one (1.4%), and a note says so."""
    peers: Dict[str, Callable[[], object]] = {}
    if case.proj_size:
        return peers
    try:
        import torch

        lstm = torch.nn.LSTM(case.H, case.H)
        lstm.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated; it is still the peer users have
            warnings.simplefilter("ignore")
            # quantize_dynamic swaps a module's children, not the module itself: give it a parent
            qlstm = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lstm), {torch.nn.LSTM}, dtype=torch.qint8)[0]
        xt = torch.from_numpy(x)

        def torch_int8():
            with torch.inference_mode():
                qlstm(xt)
        peers["torch int8"] = torch_int8
    except ImportError:
        pass
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return peers
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    zeros = np.zeros((1, case.B, case.H), np.float32)
    y32 = model(x)[0]
    ours = _relative_error(lstmcpp.quantize(model, "int8")(x)[0], y32)
    with tempfile.TemporaryDirectory() as tmp:
        plain, quantized = os.path.join(tmp, "lstm.onnx"), os.path.join(tmp, "lstm_int8.onnx")
        model.export_onnx(plain, state=True)
        for reduce_range in (False, True):
            quantize_dynamic(plain, quantized, weight_type=QuantType.QInt8, reduce_range=reduce_range)
            session = ort.InferenceSession(quantized, options, providers=["CPUExecutionProvider"])
            theirs = _relative_error(session.run(None, {"x": x, "h0": zeros, "c0": zeros})[0], y32)
            if theirs < max(3 * ours, 0.02):
                break
            if not reduce_range:
                notes.append(f"onnxruntime int8 saturates on this CPU ({theirs:.1%} off float32, ours {ours:.1%}): "
                             "measured with reduce_range=True, as its documentation advises")
    peers["onnxruntime int8"] = lambda: session.run(None, {"x": x, "h0": zeros, "c0": zeros})
    return peers


def _relative_error(y: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(y - reference) / np.linalg.norm(reference))


def _numpy_reference(case, model, x, dy):
    if case.kind != "infer":
        return None
    params = model.state_dict()
    config = reference.Config.of(model)
    return lambda: reference.forward(config, params, x)


def _torch_peers(case, model, x, dy, threads) -> Dict[str, Callable[[], object]]:
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    lstm = torch.nn.LSTM(case.H, case.H, proj_size=case.proj_size)
    lstm.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    peers = {}
    if case.kind == "pool":  # what a PyTorch service does: gather the states, LSTMCell, scatter
        cell = torch.nn.LSTMCell(case.H, case.H)
        cell.load_state_dict({k[: -len("_l0")]: v for k, v in lstm.state_dict().items()})
        h_all, c_all = torch.zeros(1024, case.H), torch.zeros(1024, case.H)
        ids, x0 = torch.from_numpy(_pool_ids(case)), xt[0]

        def gather_cell_scatter():
            with torch.inference_mode():
                h, c = cell(x0, (h_all[ids], c_all[ids]))
                h_all[ids], c_all[ids] = h, c
        peers["torch LSTMCell"] = gather_cell_scatter
    elif case.kind == "infer":
        def infer():
            with torch.inference_mode():
                lstm(xt)
        peers["torch LSTM"] = infer
    elif case.kind == "train":
        x_grad = xt.clone().requires_grad_(True)

        def train():
            y, _ = lstm(x_grad)
            y.backward(dyt)
        peers["torch LSTM"] = train
    else:
        cell = torch.nn.LSTMCell(case.H, case.H)
        cell.load_state_dict({k[: -len("_l0")]: v for k, v in lstm.state_dict().items()})
        steps = [xt[t] for t in range(case.T)]  # (B,I) each

        def cell_calls():
            with torch.inference_mode():
                state = None
                for s in steps:
                    state = cell(s, state)

        lstm_steps = [xt[t : t + 1] for t in range(case.T)]

        def lstm_calls():
            with torch.inference_mode():
                state = None
                for s in lstm_steps:
                    _, state = lstm(s, state)
        peers["torch LSTMCell"] = cell_calls
        peers["torch LSTM"] = lstm_calls
    return peers


def _onnxruntime_peer(case, model, x, dy, threads) -> Dict[str, Callable[[], object]]:
    if case.kind in ("train", "pool") or case.proj_size:
        return {}
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.export_onnx(state=True).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, case.B, case.H), np.float32)
    if case.kind == "infer":
        return {"onnxruntime": lambda: session.run(None, {"x": x, "h0": zeros, "c0": zeros})}
    steps = [x[t : t + 1] for t in range(case.T)]

    def step_calls():
        h = c = zeros
        for s in steps:
            _, h, c = session.run(None, {"x": s, "h0": h, "c0": c})
    return {"onnxruntime": step_calls}


# ------------------------------------------------------------------------------------------------
# measuring


def _time_interleaved(impls: Dict[str, Callable[[], object]], min_seconds: float, max_rounds: int,
                      block_seconds: float = 0.35, settle_seconds: float = 0.15) -> Dict[str, float]:
    """Median seconds per call of each implementation, interleaved round by round (A B C A B C ...).

    In each round every implementation runs a block of calls (``block_seconds``), and only calls
    that start ``settle_seconds`` into the block count: each library leaves its idle threads
    spinning on the cores for a while after its calls (measured here: ONNX Runtime's for about
    40 ms, NumPy's OpenBLAS's for up to ~2^28 cycles, about 90 ms), and without the settling
    time one library's idle habits would be charged to the next. Every library keeps its own
    default threading.
    """
    for fn in impls.values():  # warm up: first-call allocations, lazy initialisation
        fn()
    times: Dict[str, List[float]] = {name: [] for name in impls}
    start = time.perf_counter()
    rounds = 0
    while rounds < 3 or (time.perf_counter() - start < min_seconds and rounds < max_rounds):
        for name, fn in impls.items():
            block_start = time.perf_counter()
            kept = 0
            while True:
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                if t0 - block_start >= settle_seconds:
                    times[name].append(t1 - t0)
                    kept += 1
                if kept >= 1 and t1 - block_start >= block_seconds:
                    break
        rounds += 1
    return {name: float(np.median(t)) for name, t in times.items()}


def gemm_rate(threads: int) -> float:
    """The machine's float32 GEMM rate (FLOP/s) through NumPy's BLAS, at ``threads`` threads."""
    n = 2048
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    limiter = _blas_limiter(threads)
    try:
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(5))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    return 2 * n**3 / best


def thread_scaling(threads: int) -> float:
    """How much faster a compute-bound product (lstmcpp's, 1024^3) runs on ``threads`` threads
    than on one, right now: a check that the run had the cores it asked for (on a shared virtual
    machine that is not a given; about 1.0 means the threads took turns on one core)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), np.float32)
    before = lstmcpp.get_num_threads()
    best = {1: float("inf"), threads: float("inf")}
    try:
        for _ in range(8):  # alternating, the fastest of each
            for n in best:
                lstmcpp.set_num_threads(n)
                best[n] = min(best[n], _timed(lambda: _core.matmul_f32(a, a)))
    finally:
        lstmcpp.set_num_threads(before)
    return best[1] / best[threads]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _blas_limiter(threads: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def case_flops(case: Case) -> float:
    """Multiply-adds x 2 of the matrix products in one run of the case (one layer)."""
    P = case.proj_size or case.H
    per_step = 4 * case.H * (case.H + P) + (P * case.H if case.proj_size else 0)
    flops = 2.0 * case.T * case.B * per_step
    return 3 * flops if case.kind == "train" else flops


def run_case(case: Case, threads: int, min_seconds: float, block_seconds: float = 0.35, settle_seconds: float = 0.15) -> dict:
    rng = np.random.default_rng(0)
    model = lstmcpp.LSTM(case.H, case.H, proj_size=case.proj_size, seed=0)
    P = model.output_size
    x = rng.standard_normal((case.T, case.B, case.H)).astype(np.float32)
    dy = rng.standard_normal((case.T, case.B, P)).astype(np.float32)
    ours = lstmcpp.quantize(model, case.scheme) if case.scheme else model
    impls: Dict[str, Callable[[], object]] = {"lstmcpp": _ours(case, ours, x, dy)}
    notes = []
    peers: Dict[str, Optional[Callable[[], object]]] = {"numpy reference": _numpy_reference(case, model, x, dy)}
    if case.peers_only is None:
        torch_peers = _torch_peers(case, model, x, dy, threads)
        if not torch_peers:
            notes.append("torch not installed: skipped")
        peers.update(torch_peers)
        ort_peers = _onnxruntime_peer(case, model, x, dy, threads)
        if not ort_peers:
            notes.append("onnxruntime skipped (" + ("not installed" if case.kind not in ("train", "pool") and not case.proj_size
                                                    else "no training / projection / pool") + ")")
        peers.update(ort_peers)
        if case.scheme and case.scheme != "bf16" and case.kind == "infer":  # bf16, near-lossless, against float32
            quantized = _quantized_peers(case, model, x, threads, notes)
            if not quantized:
                notes.append("no int8 peer (" + ("neither quantizes a projection" if case.proj_size else "not installed") + ")")
            peers.update(quantized)
        if case.kind != "infer" or case.B > 1 or case.scheme:
            peers.pop("numpy reference")
    impls.update({name: fn for name, fn in peers.items() if fn is not None and (case.peers_only is None or name in case.peers_only)})
    medians = _time_interleaved(impls, min_seconds, max_rounds=200, block_seconds=block_seconds, settle_seconds=settle_seconds)
    ours_s = medians["lstmcpp"]
    return {
        "case": case.name, "kind": case.kind, "T": case.T, "B": case.B, "H": case.H, "proj_size": case.proj_size,
        "goal": case.goal, "median_s": medians, "ratio": {k: v / ours_s for k, v in medians.items() if k != "lstmcpp"},
        "gflops": case_flops(case) / ours_s / 1e9, "notes": notes, "scheme": case.scheme,
    }


def charlm_training(threads: int, min_seconds: float) -> dict:
    """One CharLM training step (embedding 64, LSTM 256, vocabulary 96, batch 32 x 100, Adam)
    in lstmcpp and in PyTorch, interleaved; an epoch is a fixed number of such steps, so the
    ratio of steps is the ratio of epochs. Also splits lstmcpp's step into LSTM and the rest."""
    from lstmcpp.models import CharLM
    from lstmcpp.optim import Adam

    V, E, H, B, L = 96, 64, 256, 32, 100
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, L)).astype(np.int32)
    y = rng.integers(0, V, (B, L)).astype(np.int32)
    lm = CharLM("".join(chr(32 + k) for k in range(V)), embedding_dim=E, hidden_size=H, seed=0)
    opt = Adam(lm, lr=1e-3)

    def ours():
        opt.zero_grad()
        lm.train_step((x, y))
        opt.step()

    impls = {"lstmcpp": ours}
    try:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        emb, lstm, head = torch.nn.Embedding(V, E), torch.nn.LSTM(E, H, batch_first=True), torch.nn.Linear(H, V)
        params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
        topt = torch.optim.Adam(params, lr=1e-3)
        xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))

        def theirs():
            topt.zero_grad()
            out, _ = lstm(emb(xt))
            loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), yt.reshape(-1))
            loss.backward()
            topt.step()

        impls["torch"] = theirs
    except ImportError:
        pass
    # lstmcpp's LSTM alone, as the model runs it (the rest is the head, the loss and Adam),
    # timed in the same rounds so the split is not skewed by the machine's load changing
    ids, table = np.ascontiguousarray(x.T), lm.embedding.params["weight"]
    dh = rng.standard_normal((L, B, H)).astype(np.float32)

    def lstm_only():
        _, _, cache = lm.lstm.forward_tokens(ids, table)
        lm.lstm.backward(cache, dh)

    impls["lstmcpp LSTM only"] = lstm_only
    medians = _time_interleaved(impls, min_seconds, max_rounds=100)
    lstm_time = medians.pop("lstmcpp LSTM only")
    step = medians["lstmcpp"]
    return {"step_s": medians, "ratio": {k: v / step for k, v in medians.items() if k != "lstmcpp"},
            "lstm_s": lstm_time, "rest_s": max(step - lstm_time, 0.0), "chars_per_s": B * L / step}


VARIANTS = {  # issue 13's cells, each as LSTM arguments
    "lstm": {},
    "cifg": dict(coupled_input_forget=True),
    "layer_norm": dict(layer_norm=True),
    "mogrifier r5": dict(mogrify_rounds=5),
    "mogrifier r5 q64": dict(mogrify_rounds=5, mogrify_rank=64),
}


def cell_variants(threads: int, min_seconds: float, T: int = 100, B: int = 32, H: int = 256) -> dict:
    """Forward + backward (B32 T100 H256) of each cell variant, interleaved, against the plain
    LSTM's; and the layer-normalised cell written with PyTorch ops (autograd) against ours. Also
    each variant's multiply-adds per step (forward and backward), so the Mogrifier's extra products
    can be stated."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    impls, macs = {}, {}
    for name, kw in VARIANTS.items():
        model = lstmcpp.LSTM(H, H, seed=0, **kw)

        def train(model=model):
            _, _, cache = model.forward(x)
            model.backward(cache, dy)
        impls[name] = train
        G = (3 if model.coupled_input_forget else 4) * H
        rounds = sum(H * (model.mogrify_rank * 2 if model.mogrify_rank else H) for _ in range(model.mogrify_rounds))
        macs[name] = 3 * (G * 2 * H + rounds)  # forward, and backward's two products for each
    try:
        import torch

        from .torch_cells import layer_norm_lstm

        torch.set_num_threads(threads)
        run = layer_norm_lstm(lstmcpp.LSTM(H, H, seed=0, layer_norm=True))
        xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)

        def torch_layer_norm():
            for p in run.params.values():
                p.grad = None
            run(xt).backward(dyt)
        impls["layer_norm, PyTorch ops"] = torch_layer_norm
    except ImportError:
        pass
    medians = _time_interleaved(impls, min_seconds, max_rounds=100)
    return {"median_s": medians, "macs_per_row_step": macs, "T": T, "B": B, "H": H}


def cell_variants_inference(threads: int, min_seconds: float, T: int = 200, H: int = 256, block_seconds: float = 0.35,
                            settle_seconds: float = 0.15) -> dict:
    """Inference of one sequence (B1 T200 H256) of each cell variant, float32 and int8,
    interleaved: what a stream of that variant costs against the LSTM's."""
    x = np.random.default_rng(0).standard_normal((T, 1, H)).astype(np.float32)
    impls = {}
    for name, kw in VARIANTS.items():
        model = lstmcpp.LSTM(H, H, seed=0, **kw)
        for scheme, m in (("float32", model), ("int8", lstmcpp.quantize(model, "int8"))):
            impls[f"{name} {scheme}"] = lambda m=m: m(x)
    medians = _time_interleaved(impls, min_seconds, max_rounds=100, block_seconds=block_seconds,
                                settle_seconds=settle_seconds)
    return {"median_s": medians, "T": T, "B": 1, "H": H}


def numpy_neighbour(threads: int, seconds: float = 4.0) -> Dict[str, Dict[str, float]]:
    """Streams (B1 T200 H256, float32 and int8) timed alone and right after a 512 x 512 NumPy
    matmul, in a fresh process for each setting of NumPy's OpenBLAS: as it comes, and with
    OPENBLAS_THREAD_TIMEOUT=4 (its idle threads sleep at once instead of spinning for about
    2^28 cycles, read when NumPy loads). {setting: {"float32 alone": s, "float32 after": s, ...}}."""
    out: Dict[str, Dict[str, float]] = {}
    for setting, extra in (("as it comes", {}), ("OPENBLAS_THREAD_TIMEOUT=4", {"OPENBLAS_THREAD_TIMEOUT": "4"})):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
        env.update(extra)
        code = _NUMPY_NEIGHBOUR_PROBE.format(threads=threads, seconds=seconds)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
        if r.returncode == 0:
            out[setting] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


_NUMPY_NEIGHBOUR_PROBE = """
import json, time
import numpy as np
import lstmcpp
lstmcpp.set_num_threads({threads})
a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
x = np.random.default_rng(1).standard_normal((200, 1, 256)).astype(np.float32)
out = {{}}
for scheme in ("float32", "int8"):
    m = lstmcpp.LSTM(256, 256, seed=0)
    q = m if scheme == "float32" else lstmcpp.quantize(m, scheme)
    alone, after = [], []
    end = time.perf_counter() + {seconds} / 2
    while time.perf_counter() < end:
        time.sleep(0.15)  # every library's idle threads asleep
        for _ in range(3):
            t = time.perf_counter(); q(x); alone.append(time.perf_counter() - t)
        for _ in range(3):
            a @ a
            t = time.perf_counter(); q(x); after.append(time.perf_counter() - t)
    out[scheme + " alone"], out[scheme + " after"] = float(np.median(alone)), float(np.median(after))
print(json.dumps(out))
"""


def peak_training_memory(threads: int) -> Dict[str, float]:
    """Peak extra resident memory (MiB) of "train H256" steps (forward and backward), each library
    in a fresh process: the peak resident size during two steps less the size before the first
    (after a tiny warm-up step, so thread stacks and BLAS buffers are not counted). Buffers a
    library keeps between steps (lstmcpp reuses freed large blocks) count once."""
    out = {}
    for lib in ("lstmcpp", "torch"):
        code = _MEMORY_PROBE.format(lib=lib, threads=threads)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        if r.returncode == 0:
            out[lib] = float(r.stdout.strip())
    return out


_MEMORY_PROBE = """
import numpy as np
def status_mib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
T, B, H = 100, 32, 256
def make_step(T, B, H):
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    dy = np.ones((T, B, H), np.float32)
    if '{lib}' == 'lstmcpp':
        import lstmcpp
        lstmcpp.set_num_threads({threads})
        m = lstmcpp.LSTM(H, H)
        def step():
            y, _, cache = m.forward(x)
            m.backward(cache, dy)
    else:
        import torch
        torch.set_num_threads({threads})
        m = torch.nn.LSTM(H, H)
        xt, dyt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(dy)
        def step():
            y, _ = m(xt)
            y.backward(dyt)
    return step
make_step(2, 2, 8)()  # first-use allocations (BLAS buffers, thread stacks) are not the steps'
step = make_step(T, B, H)
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # resets the peak resident size (VmHWM) to the current one
base = status_mib('VmRSS')
step()
step()
print(status_mib('VmHWM') - base)
"""


def machine_description() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "lstmcpp": lstmcpp.info()}
    for mod in ("torch", "onnxruntime"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "prefix", "version", "num_threads", "architecture", "threading_layer")} for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def format_table(results: List[dict], gemm_gflops: float) -> str:
    peers = []
    for r in results:
        for k in r["ratio"]:
            if k not in peers:
                peers.append(k)
    head = ["case", "lstmcpp median"] + [f"vs {p}" for p in peers] + ["GFLOP/s", "goal"]
    rows = [head]
    for r in results:
        ours = r["median_s"]["lstmcpp"]
        t = f"{ours * 1e3:.3f} ms" if ours < 1 else f"{ours:.2f} s"
        row = [r["case"], t] + [f"{r['ratio'][p]:.2f}x" if p in r["ratio"] else "-" for p in peers]
        row += [f"{r['gflops']:.0f} ({100 * r['gflops'] / gemm_gflops:.0f}%)", r["goal"]]
        rows.append(row)
    widths = [max(len(str(row[k])) for row in rows) for k in range(len(head))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(quick: bool = False, json_path: Optional[str] = None, threads: int = 2, cases: Optional[List[str]] = None) -> int:
    lstmcpp.set_num_threads(threads)
    _blas_limiter(threads)  # NumPy's BLAS (the reference) at the same thread count
    machine = machine_description()
    caches = machine["lstmcpp"]["caches"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores (caches a core sees: L1d {caches['L1d'] >> 10} KiB, "
          f"L2 {caches['L2'] >> 10} KiB, L3 {caches['L3'] >> 20} MiB); lstmcpp {machine['lstmcpp']['isa']} kernels, "
          f"{threads} threads")
    print(f"peers: torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, numpy {machine['numpy']}")
    if isinstance(machine["threadpools"], list):
        for p in machine["threadpools"]:
            print(f"  threadpool: {p['internal_api']} {p['version']} {p['prefix']} threads={p['num_threads']} arch={p['architecture']}")
    rate = gemm_rate(threads)
    print(f"float32 GEMM rate (NumPy, 2048^3, {threads} threads): {rate / 1e9:.0f} GFLOP/s")
    scaling = [thread_scaling(threads)]
    print(f"{threads}-thread scaling of a compute-bound product: {scaling[0]:.2f}x "
          "(about 1.0x if the threads had to share one core)")
    selected = [c for c in CASES if (not quick or c.quick) and (cases is None or c.name in cases)]
    results = []
    for case in selected:
        r = run_case(case, threads, min_seconds=1.0 if quick else 4.0)
        results.append(r)
        best = min((v for k, v in r["ratio"].items()), default=float("nan"))
        print(f"  {case.name}: lstmcpp {r['median_s']['lstmcpp'] * 1e3:.3f} ms; " +
              ", ".join(f"{k} {v:.2f}x" for k, v in r["ratio"].items()) + (f" (slowest ratio {best:.2f}x)" if r["ratio"] else "") +
              ("; " + "; ".join(r["notes"]) if r["notes"] else ""), flush=True)
    print()
    print(format_table(results, rate / 1e9))
    scaling.append(thread_scaling(threads))
    lm = charlm_training(threads, min_seconds=1.0 if quick else 10.0)
    scaling.append(thread_scaling(threads))
    ratio = lm["ratio"].get("torch")
    print(f"\nCharLM training step (embedding 64, LSTM 256, vocab 96, batch 32 x 100, Adam): lstmcpp "
          f"{lm['step_s']['lstmcpp'] * 1e3:.1f} ms ({lm['chars_per_s']:,.0f} chars/s)"
          + (f", torch {lm['step_s']['torch'] * 1e3:.1f} ms: {ratio:.2f}x" if ratio else ", torch not installed")
          + f"; lstmcpp's step: LSTM {lm['lstm_s'] * 1e3:.1f} ms, the rest {lm['rest_s'] * 1e3:.1f} ms"
          + f" ({threads}-thread scaling before and after it: {scaling[1]:.2f}x, {scaling[2]:.2f}x)")
    variants = cell_variants(threads, min_seconds=1.0 if quick else 6.0)
    plain, ln = variants["median_s"]["lstm"], variants["median_s"]["layer_norm"]
    print(f"\ncell variants, forward + backward B{variants['B']} T{variants['T']} H{variants['H']} (goal: within 1.3x "
          "of the LSTM's, the Mogrifier plus its extra products; layer norm >= 3x PyTorch ops):")
    for name, t in variants["median_s"].items():
        if name in variants["macs_per_row_step"]:
            work = variants["macs_per_row_step"][name] / variants["macs_per_row_step"]["lstm"]
            print(f"  {name:18s} {t * 1e3:7.1f} ms  {t / plain:.2f}x the LSTM's time  ({work:.2f}x its multiply-adds)")
    if "layer_norm, PyTorch ops" in variants["median_s"]:
        print(f"  layer_norm with PyTorch ops (autograd): {variants['median_s']['layer_norm, PyTorch ops'] * 1e3:.1f} ms, "
              f"{variants['median_s']['layer_norm, PyTorch ops'] / ln:.2f}x lstmcpp's layer_norm")
    inference = cell_variants_inference(threads, min_seconds=1.0 if quick else 4.0)
    print(f"\ncell variants, inference of one sequence B1 T{inference['T']} H{inference['H']} (a stream; float32, int8):")
    for name in VARIANTS:
        parts = []
        for scheme in ("float32", "int8"):
            t = inference["median_s"][f"{name} {scheme}"]
            parts.append(f"{scheme} {t * 1e3:6.2f} ms {t / inference['median_s'][f'lstm {scheme}']:.2f}x")
        print(f"  {name:18s} " + ",  ".join(parts) + "  (the LSTM's time in its scheme)")
    memory, neighbour = {}, {}
    if not quick:
        neighbour = numpy_neighbour(threads)
        print("\nstream B1 T200 H256 right after a 512 x 512 NumPy matmul (goal: <= 1.25x its time alone):")
        for setting, t in neighbour.items():
            print(f"  NumPy's OpenBLAS {setting}: " + ", ".join(
                f"{s} {t[s + ' alone'] * 1e3:.2f} ms alone, {t[s + ' after'] * 1e3:.2f} ms after "
                f"({t[s + ' after'] / t[s + ' alone']:.2f}x)" for s in ("float32", "int8")))
        memory = peak_training_memory(threads)
        print("\npeak extra memory of 'train H256' steps (two, from before the first): " + ", ".join(f"{k} {v:.1f} MiB" for k, v in memory.items()))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": machine, "threads": threads, "gemm_gflops": rate / 1e9,
                       "thread_scaling": {"start": scaling[0], "before_charlm": scaling[1], "after_charlm": scaling[2]},
                       "results": results,
                       "charlm_training": lm, "cell_variants": variants, "cell_variants_inference": inference,
                       "train_h256_peak_extra_mib": memory,
                       "after_numpy_matmul_s": neighbour}, f, indent=2)
        print(f"\nwrote {json_path}")
    return 0
