"""The LSTM in plain, readable NumPy: the reference the C++ core is tested against.

Same math, same parameter names and layout as :class:`lstmcpp.LSTM` (see SPEC.md §1), one
time step at a time, with no attempt at speed. Size legend: T = time steps, B = batch,
I = input features, H = hidden units, P = output size (proj_size or H), D = directions,
L = layers. Gate blocks along 4H are i, f, g, o (CIFG: along 3H, i, g, o).

>>> from lstmcpp import reference
>>> cfg = reference.Config(input_size=3, hidden_size=4)
>>> params = reference.init_params(cfg, seed=0)
>>> y, (h_n, c_n), cache = reference.forward(cfg, params, np.zeros((5, 2, 3)))
>>> dx, (dh0, dc0), grads = reference.backward(cache, np.ones_like(y))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Config", "param_shapes", "init_params", "forward", "backward", "sigmoid", "QuantizedRows",
           "quantize_rows_int8", "quantize_activations_int8", "int8_product", "Bfloat16Rows", "to_bfloat16",
           "CodebookRows", "codebook_rows", "kmeans_1d", "init_rnn_tanh", "rnn_tanh_forward", "rnn_tanh_backward"]

Params = Dict[str, Any]  # name -> array, or QuantizedRows for a matrix in the int8 format


@dataclass(frozen=True)
class Config:
    """The architecture of a (multi-layer, maybe bidirectional) LSTM."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    proj_size: int = 0
    peepholes: bool = False
    cell_clip: Optional[float] = None
    proj_clip: Optional[float] = None
    reverse: bool = False  # one direction reading each sequence from its end
    coupled_input_forget: bool = False  # CIFG (SPEC §7): f = 1 - i, no forget block
    layer_norm: bool = False  # SPEC §7: the two products' and the cell's layer normalisation
    mogrify_rounds: int = 0  # SPEC §7: rounds of the Mogrifier before each step's gates
    mogrify_rank: int = 0  # 0: full Q_j and R_j; else each the product of two rank-q factors

    @property
    def gates(self) -> Tuple[str, ...]:
        """The gate blocks of ``z``, in order."""
        return ("i", "g", "o") if self.coupled_input_forget else ("i", "f", "g", "o")

    @property
    def peephole_rows(self) -> Tuple[str, ...]:
        """The gates the peepholes feed, in the order of ``weight_peephole``'s rows."""
        return ("i", "o") if self.coupled_input_forget else ("i", "f", "o")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.directions * self.output_size

    @classmethod
    def of(cls, model: Any) -> "Config":
        """The architecture of an :class:`lstmcpp.LSTM` (or anything with these attributes)."""
        return cls(**{f.name: getattr(model, f.name, f.default) for f in dataclasses.fields(cls)})


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def param_shapes(config: Config) -> Dict[str, Tuple[int, ...]]:
    """Every parameter's name and shape, in PyTorch's order, peepholes last."""
    H, P = config.hidden_size, config.output_size
    G = len(config.gates) * H
    shapes: Dict[str, Tuple[int, ...]] = {}
    for layer in range(config.num_layers):
        for d in range(config.directions):
            s = _suffix(layer, d)
            shapes["weight_ih" + s] = (G, config.layer_input_size(layer))
            shapes["weight_hh" + s] = (G, P)
            if config.bias:
                shapes["bias_ih" + s] = (G,)
                shapes["bias_hh" + s] = (G,)
            if config.proj_size > 0:
                shapes["weight_hr" + s] = (P, H)
    if config.peepholes:
        for layer in range(config.num_layers):
            for d in range(config.directions):
                shapes["weight_peephole" + _suffix(layer, d)] = (len(config.peephole_rows), H)
    if config.layer_norm:
        for layer in range(config.num_layers):
            for d in range(config.directions):
                s = _suffix(layer, d)
                shapes["ln_weight_ih" + s] = (G,)
                shapes["ln_weight_hh" + s] = (G,)
                shapes["ln_weight_c" + s] = (H,)
                shapes["ln_bias_c" + s] = (H,)
    for layer in range(config.num_layers):
        for d in range(config.directions):
            for name, shape in _mogrifier_shapes(config, layer).items():
                shapes[name.replace("_l", f"_l{layer}", 1) + ("_reverse" if d else "")] = shape
    return shapes


def _mogrifier_shapes(config: Config, layer: int) -> Dict[str, Tuple[int, ...]]:
    """One cell's Mogrifier matrices, named ``weight_mogrify_l_{j}[_a|_b]`` (the layer's number
    goes after ``_l``): Q_j (I,P) for odd j, R_j (P,I) for even j, or their factors."""
    I, P, q = config.layer_input_size(layer), config.output_size, config.mogrify_rank
    shapes = {}
    for j in range(1, config.mogrify_rounds + 1):
        rows, cols = (I, P) if j % 2 else (P, I)
        if q:
            shapes[f"weight_mogrify_l_{j}_a"] = (rows, q)
            shapes[f"weight_mogrify_l_{j}_b"] = (q, cols)
        else:
            shapes[f"weight_mogrify_l_{j}"] = (rows, cols)
    return shapes


def init_params(config: Config, seed: Optional[int] = None, dtype=np.float64) -> Params:
    """PyTorch's initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H)); layer norm's gains 1
    and its bias 0."""
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(config.hidden_size)
    params = {}
    for n, s in param_shapes(config).items():
        if n.startswith("ln_weight"):
            params[n] = np.ones(s, dtype)
        elif n.startswith("ln_bias"):
            params[n] = np.zeros(s, dtype)
        else:
            params[n] = rng.uniform(-k, k, s).astype(dtype)
    return params


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _clip(x: np.ndarray, limit: Optional[float]) -> np.ndarray:
    return x if limit is None else np.clip(x, -limit, limit)


def _passes(x: np.ndarray, limit: Optional[float]) -> np.ndarray:
    """Where clip(x) passes gradient: strictly inside the limits (1.0), else 0.0."""
    return np.ones_like(x) if limit is None else (np.abs(x) < limit).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# the int8 weight format (SPEC §5): the integer arithmetic exactly as the kernels do it, in float32


@dataclass(frozen=True)
class QuantizedRows:
    """A matrix (N,K) in the int8 format: row n is ``q[n] * scale[n]``."""

    q: np.ndarray      # (N,K) int8 in [-127, 127]
    scale: np.ndarray  # (N,) float32

    def dequantize(self) -> np.ndarray:
        return self.q.astype(np.float32) * self.scale[:, None]


def _row_scales(a: np.ndarray):
    """Each float32 row's scale max|a|/127 and the factor 127/max|a| that maps it onto [-127, 127]
    (0 and 0 for a row of zeros; NaN and 0 for a row holding NaN or Inf)."""
    amax = np.abs(a).max(axis=1)
    finite = np.isfinite(a).all(axis=1)
    positive = finite & (amax > 0)
    scale = np.where(finite, amax / np.float32(127), np.float32(np.nan)).astype(np.float32)
    inv = np.where(positive, np.float32(127) / np.where(positive, amax, np.float32(1)), np.float32(0)).astype(np.float32)
    return scale, inv, finite


def quantize_rows_int8(w: np.ndarray) -> QuantizedRows:
    """Round each row of ``w`` onto its own symmetric int8 grid (round half to even)."""
    w = np.asarray(w, np.float32)
    scale, inv, _ = _row_scales(w)
    q = np.clip(np.rint(w * inv[:, None]), -127, 127).astype(np.int8)
    return QuantizedRows(q, scale)


def quantize_activations_int8(a: np.ndarray):
    """The activations entering an int8 product, each row (batch row, step) on its own grid:
    ``(q (M,K) int32 in [-127, 127], scale (M,) float32)``; a row holding NaN or Inf becomes zeros
    with scale NaN."""
    a = np.asarray(a, np.float32)
    scale, inv, finite = _row_scales(a)
    a = np.where(finite[:, None], a, np.float32(0))
    return np.clip(np.rint(a * inv[:, None]), -127, 127).astype(np.int32), scale


def int8_product(a: np.ndarray, w: QuantizedRows) -> np.ndarray:
    """``a (M,K) @ W^T`` in the int8 format: integer sums, exact, then ``sum * (scale_a * scale_w)``."""
    q, scale = quantize_activations_int8(a)
    sums = q.astype(np.int64) @ w.q.astype(np.int64).T
    return sums.astype(np.float32) * (scale[:, None] * w.scale[None, :])


# ----------------------------------------------------------------------------------------------
# the bf16 weight format: weights rounded to bfloat16, every product and sum in float32


@dataclass(frozen=True)
class Bfloat16Rows:
    """A matrix (N,K) in the bf16 format: the high 16 bits of each float32 weight, rounded."""

    bits: np.ndarray  # (N,K) uint16

    def dequantize(self) -> np.ndarray:
        return (self.bits.astype(np.uint32) << 16).view(np.float32)


def to_bfloat16(w: np.ndarray) -> Bfloat16Rows:
    """Round float32 ``w`` to bfloat16, to nearest, ties to even (finite values)."""
    bits = np.asarray(w, np.float32).view(np.uint32).astype(np.uint64)
    return Bfloat16Rows(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16))


# ----------------------------------------------------------------------------------------------
# the codebook weight formats: each weight the index of its value in a book fitted by k-means


@dataclass(frozen=True)
class CodebookRows:
    """A matrix (N,K) in a codebook format: row n's weight k is ``books[n // rows_per_book][indices[n, k]]``."""

    indices: np.ndarray  # (N,K) uint8
    books: np.ndarray    # (N // rows_per_book, 16 or 256) float32

    @property
    def rows_per_book(self) -> int:
        return self.indices.shape[0] // self.books.shape[0]

    def dequantize(self) -> np.ndarray:
        book_of_row = np.arange(self.indices.shape[0]) // self.rows_per_book
        return self.books[book_of_row[:, None], self.indices]


def kmeans_1d(values: np.ndarray, k: int, seed: int, iterations: int = 30):
    """``k`` centers for 1-D ``values`` by Lloyd's iterations from a k-means++ start (seeded, so
    the same values and seed give the same result): ``(centers (k,) float32 ascending, index of
    each value's center (n,) uint8)``."""
    x = np.asarray(values, np.float64).ravel()
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(len(x))]]
    d2 = (x - centers[0]) ** 2  # each value's squared distance to its nearest center so far
    for _ in range(1, k):  # k-means++: each next center drawn with probability ~ squared distance
        total = d2.sum()
        centers.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
        d2 = np.minimum(d2, (x - centers[-1]) ** 2)
    centers = np.sort(np.array(centers))
    assignment = None
    for _ in range(iterations):
        new = _nearest(x, centers)
        if assignment is not None and np.array_equal(new, assignment):
            break
        assignment = new
        counts = np.bincount(assignment, minlength=k)
        sums = np.bincount(assignment, weights=x, minlength=k)
        centers = np.where(counts > 0, sums / np.maximum(counts, 1), centers)  # an empty center stays
        order = np.argsort(centers, kind="stable")
        centers = centers[order]
    return centers.astype(np.float32), _nearest(x, centers).astype(np.uint8)


def _nearest(x: np.ndarray, sorted_centers: np.ndarray) -> np.ndarray:
    """The index of the nearest of ``sorted_centers`` (ascending) to each value (ties: the lower)."""
    cut = np.searchsorted((sorted_centers[1:] + sorted_centers[:-1]) / 2, x, side="left")
    return cut.astype(np.int64)


def codebook_rows(w: np.ndarray, book_size: int, rows_per_book: int, seed: int) -> CodebookRows:
    """``w`` (N,K) in a codebook format: a book of ``book_size`` values for each ``rows_per_book`` rows."""
    w = np.asarray(w, np.float32)
    N = w.shape[0]
    books, indices = [], np.empty(w.shape, np.uint8)
    for b in range(N // rows_per_book):
        rows = slice(b * rows_per_book, (b + 1) * rows_per_book)
        centers, assignment = kmeans_1d(w[rows], book_size, seed=seed * 1_000_003 + b)
        books.append(centers)
        indices[rows] = assignment.reshape(w[rows].shape)
    return CodebookRows(indices, np.stack(books))


def _product(a: np.ndarray, w) -> np.ndarray:
    """``a @ w^T`` for a float matrix or one in the int8, bf16 or a codebook format."""
    if isinstance(w, QuantizedRows):
        return int8_product(a, w)
    if isinstance(w, (Bfloat16Rows, CodebookRows)):
        return np.asarray(a, np.float32) @ w.dequantize().T
    return a @ w.T


# ----------------------------------------------------------------------------------------------
# one cell: one layer, one direction


def _peepholes(config: Config, p: Params):
    """The peephole weights of gates i, f, o (0.0 where the cell has none)."""
    rows = dict(zip(config.peephole_rows, p["weight_peephole"])) if config.peepholes else {}
    return rows.get("i", 0.0), rows.get("f", 0.0), rows.get("o", 0.0)


LN_EPS = 1e-5


def _normalize(v: np.ndarray):
    """Layer normalisation of each row of ``v`` (no gain, no bias): ``(v_hat, 1/std)``."""
    mean = v.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(((v - mean) ** 2).mean(axis=1, keepdims=True) + LN_EPS)
    return (v - mean) * rstd, rstd


def _normalize_backward(d_hat: np.ndarray, v_hat: np.ndarray, rstd: np.ndarray) -> np.ndarray:
    """The gradient of ``v`` from that of ``v_hat = _normalize(v)[0]``."""
    return rstd * (d_hat - d_hat.mean(axis=1, keepdims=True) - v_hat * (d_hat * v_hat).mean(axis=1, keepdims=True))


def _mogrifier_matrix(p: Params, j: int) -> np.ndarray:
    """Q_j (odd j) or R_j (even j), whole or as the product of its factors."""
    if f"mogrify_{j}" in p:
        return p[f"mogrify_{j}"]
    return p[f"mogrify_{j}_a"] @ p[f"mogrify_{j}_b"]


def _mogrify(config: Config, p: Params, x: np.ndarray, h: np.ndarray):
    """The Mogrifier's rounds on one step's x (B,I) and h (B,P): ``xs, hs`` keyed by round, with
    xs[-1] = x, hs[0] = h; odd j: xs[j] = 2*sigmoid(hs[j-1] Q_j^T) * xs[j-2]; even j:
    hs[j] = 2*sigmoid(xs[j-1] R_j^T) * hs[j-2]. The gates read the last of each."""
    xs, hs = {-1: x}, {0: h}
    for j in range(1, config.mogrify_rounds + 1):
        if j % 2:
            xs[j] = 2 * sigmoid(hs[j - 1] @ _mogrifier_matrix(p, j).T) * xs[j - 2]
        else:
            hs[j] = 2 * sigmoid(xs[j - 1] @ _mogrifier_matrix(p, j).T) * hs[j - 2]
    return xs, hs


def _mogrify_backward(config: Config, p: Params, xs, hs, dx_last, dh_last, grads: Params):
    """Back through _mogrify's rounds: the gradients of its x and h, from those of the last x and
    h the gates read; adds the matrices' gradients into grads."""
    dxs, dhs = {max(xs): dx_last}, {max(hs): dh_last}
    for j in range(config.mogrify_rounds, 0, -1):
        M = _mogrifier_matrix(p, j)
        # odd j: xs[j] = s * xs[j-2], s = 2*sigmoid(hs[j-1] M^T); even j the same with x and h swapped
        out, src, scaled, d_out, d_src, d_scaled = ((xs, hs, xs, dxs, dhs, dxs) if j % 2 else (hs, xs, hs, dhs, dxs, dhs))
        s = 2 * sigmoid(src[j - 1] @ M.T)
        d = d_out.pop(j)
        d_scaled[j - 2] = d_scaled.get(j - 2, 0.0) + d * s
        dp = d * scaled[j - 2] * s * (1 - s / 2)  # d(2*sigmoid(p))/dp = 2*sig*(1 - sig)
        dM = dp.T @ src[j - 1]
        if f"mogrify_{j}" in p:
            grads[f"mogrify_{j}"] += dM
        else:
            grads[f"mogrify_{j}_a"] += dM @ p[f"mogrify_{j}_b"].T
            grads[f"mogrify_{j}_b"] += p[f"mogrify_{j}_a"].T @ dM
        d_src[j - 1] = d_src.get(j - 1, 0.0) + dp @ M
    return dxs.get(-1, 0.0), dhs.get(0, 0.0)


def _cell_forward(config: Config, p: Params, x, h0, c0, lengths, reverse: bool):
    """x (T,B,I), h0 (B,P), c0 (B,H), lengths (B). Returns y (T,B,P), h_n, c_n, cache."""
    T, B, _ = x.shape
    W_ih, W_hh = p["weight_ih"], p["weight_hh"]
    bias = p["bias_ih"] + p["bias_hh"] if config.bias else 0.0
    w_i, w_f, w_o = _peepholes(config, p)
    W_hr = p.get("weight_hr")

    y = np.zeros((T, B, config.output_size), dtype=x.dtype)
    h, c = h0, c0
    steps = []
    for t in (reversed(range(T)) if reverse else range(T)):
        step = dict(t=t, x=x[t], h=h, c=c)
        x_in, h_in = x[t], h
        if config.mogrify_rounds:  # x and h gate each other before the gates read them
            step["xs"], step["hs"] = xs, hs = _mogrify(config, p, x[t], h)
            x_in, h_in = xs[max(xs)], hs[max(hs)]
        if config.layer_norm:  # each product normalised over its whole row, then its gain
            step["a_hat"], step["a_rstd"] = _normalize(_product(x_in, W_ih))
            step["r_hat"], step["r_rstd"] = _normalize(_product(h_in, W_hh))
            z = step["a_hat"] * p["ln_weight_ih"] + step["r_hat"] * p["ln_weight_hh"] + bias
        else:
            z = _product(x_in, W_ih) + _product(h_in, W_hh) + bias  # (B,G): one product for all the gates
        zs = dict(zip(config.gates, np.split(z, len(config.gates), axis=1)))
        i = sigmoid(zs["i"] + w_i * c)
        f = 1 - i if config.coupled_input_forget else sigmoid(zs["f"] + w_f * c)
        g = np.tanh(zs["g"])
        c_new = _clip(f * c + i * g, config.cell_clip)
        o = sigmoid(zs["o"] + w_o * c_new)  # the output peephole sees the new cell
        if config.layer_norm:  # m reads the normalised cell; the state carries c_new itself
            step["c_hat"], step["c_rstd"] = _normalize(c_new)
            tanh_c = np.tanh(step["c_hat"] * p["ln_weight_c"] + p["ln_bias_c"])
        else:
            tanh_c = np.tanh(c_new)
        m = o * tanh_c
        h_new = _clip(_product(m, W_hr), config.proj_clip) if W_hr is not None else m
        on = (t < lengths)[:, None]  # (B,1): elements past their length keep their state
        step.update(on=on, x_in=x_in, h_in=h_in, i=i, f=f, g=g, o=o, c_new=c_new, tanh_c=tanh_c, m=m, h_new=h_new)
        steps.append(step)
        y[t] = np.where(on, h_new, 0.0)
        h, c = np.where(on, h_new, h), np.where(on, c_new, c)
    return y, h, c, dict(config=config, p=p, steps=steps, T=T, I=x.shape[2])


def _cell_backward(cache, dy, dh_n, dc_n):
    """dy (T,B,P), dh_n (B,P), dc_n (B,H). Returns dx (T,B,I), dh0, dc0, grads."""
    config, p = cache["config"], cache["p"]
    W_ih, W_hh, W_hr = p["weight_ih"], p["weight_hh"], p.get("weight_hr")
    w_i, w_f, w_o = _peepholes(config, p)
    grads = {name: np.zeros_like(v) for name, v in p.items()}
    dx = np.zeros((cache["T"], dy.shape[1], cache["I"]), dtype=dy.dtype)
    dh, dc = dh_n.copy(), dc_n.copy()
    for s in reversed(cache["steps"]):  # the reverse of the order the forward ran
        t, on = s["t"], s["on"]
        i, f, g, o, c_prev, c_new, tanh_c = s["i"], s["f"], s["g"], s["o"], s["c"], s["c_new"], s["tanh_c"]
        dh_step = np.where(on, dh + dy[t], 0.0)
        if W_hr is not None:  # h = clip(m W_hr^T)
            dh_raw = dh_step * _passes(s["h_new"], config.proj_clip)
            grads["weight_hr"] += dh_raw.T @ s["m"]
            dm = dh_raw @ W_hr
        else:
            dm = dh_step
        dzo = dm * tanh_c * o * (1 - o)  # m = o * tanh_c
        d_tanh_c = dm * o * (1 - tanh_c**2)
        if config.layer_norm:  # tanh_c = tanh(LN(c)*g_c + b_c)
            grads["ln_weight_c"] += (d_tanh_c * s["c_hat"]).sum(0)
            grads["ln_bias_c"] += d_tanh_c.sum(0)
            d_cell = _normalize_backward(d_tanh_c * p["ln_weight_c"], s["c_hat"], s["c_rstd"])
        else:
            d_cell = d_tanh_c
        dct = np.where(on, dc, 0.0) + d_cell + dzo * w_o
        dct = dct * _passes(c_new, config.cell_clip)  # c = clip(f*c_prev + i*g)
        dzg = dct * i * (1 - g**2)
        if config.coupled_input_forget:  # f = 1 - i
            dzi = dct * (g - c_prev) * i * (1 - i)
            dzf = 0.0
        else:
            dzi = dct * g * i * (1 - i)
            dzf = dct * c_prev * f * (1 - f)
        dzs = dict(i=dzi, f=dzf, g=dzg, o=dzo)
        dz = np.concatenate([dzs[q] for q in config.gates], axis=1)  # (B,G); zero where the step did not run
        if config.bias:
            grads["bias_ih"] += dz.sum(0)
            grads["bias_hh"] += dz.sum(0)
        if config.peepholes:  # each gate's peephole sees c_prev, the output gate's c_new
            seen = dict(i=c_prev, f=c_prev, o=c_new)
            grads["weight_peephole"] += np.stack([(dzs[q] * seen[q]).sum(0) for q in config.peephole_rows])
        if config.layer_norm:  # z = LN(a)*g_ih + LN(r)*g_hh + b: a and r's own gradients
            grads["ln_weight_ih"] += (dz * s["a_hat"]).sum(0)
            grads["ln_weight_hh"] += (dz * s["r_hat"]).sum(0)
            da = _normalize_backward(dz * p["ln_weight_ih"], s["a_hat"], s["a_rstd"])
            dr = _normalize_backward(dz * p["ln_weight_hh"], s["r_hat"], s["r_rstd"])
        else:
            da = dr = dz
        grads["weight_ih"] += da.T @ s["x_in"]
        grads["weight_hh"] += dr.T @ s["h_in"]
        dx_in, dh_in = da @ W_ih, dr @ W_hh
        if config.mogrify_rounds:
            dx_in, dh_in = _mogrify_backward(config, p, s["xs"], s["hs"], dx_in, dh_in, grads)
        dx[t] = dx_in
        dh = np.where(on, dh_in, dh)
        dc = np.where(on, dct * f + dzi * w_i + dzf * w_f, dc)
    return dx, dh, dc, grads


# ----------------------------------------------------------------------------------------------
# the whole layer


_CELL_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peephole",
                "ln_weight_ih", "ln_weight_hh", "ln_weight_c", "ln_bias_c")


def _cell_params(params: Params, layer: int, direction: int) -> Params:
    """One cell's parameters, keyed without their ``_l{layer}[_reverse]`` suffix (the Mogrifier's
    ``weight_mogrify_l{layer}_{j}[_a|_b][_reverse]`` as ``mogrify_{j}[_a|_b]``)."""
    s = _suffix(layer, direction)
    p = {n: params[n + s] for n in _CELL_PARAMS if n + s in params}
    tail = "_reverse" if direction else ""
    for name, value in params.items():
        prefix = f"weight_mogrify_l{layer}_"
        if name.startswith(prefix) and name.endswith(tail) and (direction or not name.endswith("_reverse")):
            p["mogrify_" + name[len(prefix) : len(name) - len(tail)]] = value
    return p


def _param_name(key: str, layer: int, direction: int) -> str:
    """_cell_params' key back to the parameter's name."""
    if key.startswith("mogrify_"):
        return f"weight_mogrify_l{layer}_{key[len('mogrify_'):]}" + ("_reverse" if direction else "")
    return key + _suffix(layer, direction)


def forward(
    config: Config,
    params: Params,
    x: np.ndarray,
    h0: Optional[np.ndarray] = None,
    c0: Optional[np.ndarray] = None,
    lengths: Optional[Sequence[int]] = None,
    dropout_masks: Optional[List[np.ndarray]] = None,
):
    """Run the LSTM on time-major ``x (T,B,I)``.

    Returns ``y (T,B,D*P), (h_n (D*L,B,P), c_n (D*L,B,H)), cache``. ``dropout_masks`` holds,
    for each layer but the last, a ``(T,B,D*P)`` array multiplied into that layer's output. A
    matrix given as :class:`QuantizedRows`, :class:`Bfloat16Rows` or :class:`CodebookRows` is
    multiplied in its format (forward only; run it in float32, as the core does).
    """
    T, B, _ = x.shape
    L, D, H, P = config.num_layers, config.directions, config.hidden_size, config.output_size
    h0 = np.zeros((D * L, B, P), x.dtype) if h0 is None else h0
    c0 = np.zeros((D * L, B, H), x.dtype) if c0 is None else c0
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    cells, inp = [], x
    for layer in range(L):
        outs = []
        for d in range(D):
            k = layer * D + d
            p = _cell_params(params, layer, d)
            y, h_n[k], c_n[k], cell = _cell_forward(config, p, inp, h0[k], c0[k], lengths, reverse=d == 1 or config.reverse)
            outs.append(y)
            cells.append(cell)
        out = np.concatenate(outs, axis=2)
        inp = out * dropout_masks[layer] if dropout_masks is not None and layer < L - 1 else out
    cache = dict(config=config, cells=cells, masks=dropout_masks, B=B)
    return inp, (h_n, c_n), cache


def backward(cache, dy: np.ndarray, dh_n: Optional[np.ndarray] = None, dc_n: Optional[np.ndarray] = None):
    """Backpropagate ``dy (T,B,D*P)`` and the final-state gradients through ``cache``.

    Returns ``dx (T,B,I), (dh0, dc0), grads`` with ``grads`` keyed like the parameters.
    """
    config = cache["config"]
    L, D, H, P = config.num_layers, config.directions, config.hidden_size, config.output_size
    B = cache["B"]
    dh_n = np.zeros((D * L, B, P), dy.dtype) if dh_n is None else dh_n
    dc_n = np.zeros((D * L, B, H), dy.dtype) if dc_n is None else dc_n
    dh0, dc0 = np.zeros_like(dh_n), np.zeros_like(dc_n)
    grads: Params = {}
    d_out = dy
    for layer in reversed(range(L)):
        d_in = 0.0
        for d in range(D):
            k = layer * D + d
            dxk, dh0[k], dc0[k], g = _cell_backward(cache["cells"][k], d_out[:, :, d * P : (d + 1) * P], dh_n[k], dc_n[k])
            d_in = d_in + dxk
            grads.update({_param_name(n, layer, d): v for n, v in g.items()})
        if layer > 0 and cache["masks"] is not None:
            d_in = d_in * cache["masks"][layer - 1]
        d_out = d_in
    return d_out, (dh0, dc0), {n: grads[n] for n in param_shapes(config)}


# ----------------------------------------------------------------------------------------------
# the vanilla RNN the LSTM was made to fix (the notes' starting point), for comparison only


def init_rnn_tanh(input_size: int, hidden_size: int, seed: Optional[int] = None) -> Params:
    """PyTorch's ``nn.RNN`` initialisation, U(-1/sqrt(H), 1/sqrt(H)), under its names."""
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(hidden_size)
    shapes = dict(weight_ih=(hidden_size, input_size), weight_hh=(hidden_size, hidden_size), bias_ih=(hidden_size,),
                  bias_hh=(hidden_size,))
    return {n: rng.uniform(-k, k, s) for n, s in shapes.items()}


def rnn_tanh_forward(p: Params, x: np.ndarray, h0: Optional[np.ndarray] = None):
    """h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) over x (T,B,I): ``y (T,B,H), cache``."""
    T, B, _ = x.shape
    h = np.zeros((B, p["weight_hh"].shape[0])) if h0 is None else h0
    hs = [h]
    for t in range(T):
        h = np.tanh(x[t] @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"])
        hs.append(h)
    return np.stack(hs[1:]), dict(p=p, x=x, hs=hs)


def rnn_tanh_backward(cache, dy: np.ndarray) -> np.ndarray:
    """The gradient of the input x (T,B,I) for the upstream gradient dy (T,B,H) of the outputs."""
    p, x, hs = cache["p"], cache["x"], cache["hs"]
    dx = np.zeros_like(x)
    dh = np.zeros_like(hs[0])
    for t in reversed(range(len(x))):
        dz = (dh + dy[t]) * (1 - hs[t + 1] ** 2)  # h = tanh(z)
        dx[t] = dz @ p["weight_ih"]
        dh = dz @ p["weight_hh"]
    return dx
