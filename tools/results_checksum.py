"""A checksum of the core's results over a fixed grid, for commits that must change no results
(a refactor, a split of files): run it before and after, under the same CPU, and compare.

    python tools/results_checksum.py            # one line per (ISA, dtype): a SHA-256 prefix

It hashes the bytes of every output, state, input gradient and parameter gradient of forward and
backward over configurations that cover every feature (layers, directions, projection, peepholes,
clips, lengths, token input, dropout), both per-step product forms (in place and packed), and 1
and 2 threads, under each instruction set this CPU supports. float64 runs on the portable kernels.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

import lstmcpp
from lstmcpp import _core

CONFIGS = [
    dict(input_size=7, hidden_size=19),
    dict(input_size=5, hidden_size=33, num_layers=2, bidirectional=True, peepholes=True),
    dict(input_size=11, hidden_size=40, proj_size=13, cell_clip=0.7, proj_clip=0.4, peepholes=True),
    dict(input_size=6, hidden_size=24, num_layers=3, dropout=0.3, bias=False),
    dict(input_size=9, hidden_size=64, num_layers=2, proj_size=20, bidirectional=True),
]
SHAPES = [(1, 1), (12, 1), (1, 5), (9, 19), (30, 3)]  # (T, B)


def run_grid(dtype: str) -> str:
    digest = hashlib.sha256()

    def add(*arrays):
        for a in arrays:
            digest.update(np.ascontiguousarray(a).tobytes())

    for (k, cfg), (T, B), lengths_on in itertools.product(enumerate(CONFIGS), SHAPES, (False, True)):
        model = lstmcpp.LSTM(**cfg, dtype=dtype, seed=k)
        rng = np.random.default_rng(k * 100 + T * 7 + B)
        x = rng.standard_normal((T, B, cfg["input_size"])).astype(dtype)
        lengths = rng.integers(1, T + 1, size=B) if lengths_on else None
        state = None
        if B > 1:
            h0, c0 = (rng.standard_normal(s.shape).astype(dtype) for s in model(x[:1])[1])
            state = (h0, c0)
        y, (h, c) = model(x, state, lengths=lengths)
        add(y, h, c)
        model.zero_grad()
        y, (h, c), cache = model.forward(x, state, lengths=lengths, training=True)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dh = rng.standard_normal(h.shape).astype(dtype)
        dx, (dh0, dc0) = model.backward(cache, dy, (dh, rng.standard_normal(c.shape).astype(dtype)))
        add(y, h, c, dx, dh0, dc0, *model.grads.values())
        if cfg.get("dropout", 0) == 0:
            table = rng.standard_normal((6, cfg["input_size"])).astype(dtype)
            ids = rng.integers(0, 6, size=(T, B))
            model.zero_grad()
            y, (h, c), cache = model.forward_tokens(ids, table, lengths=lengths)
            d_table, (dh0, dc0) = model.backward(cache, rng.standard_normal(y.shape).astype(dtype))
            add(y, h, c, d_table, dh0, dc0, *model.grads.values())
    return digest.hexdigest()[:16]


def main() -> None:
    isas = [n for n in _core.isa_names() if _core.isa_supported(n)]
    threads = lstmcpp.get_num_threads()
    try:
        _core.set_min_work_per_thread(1)
        for isa, dtype, pack, n in itertools.product(isas, ("float32", "float64"), ("in_place", "packed"), (1, 2)):
            if dtype == "float64" and isa != "portable":
                continue  # float64 always runs the portable kernels
            _core.set_isa(isa)
            _core.set_pack_min_rows(1 << 40 if pack == "in_place" else 1)
            lstmcpp.set_num_threads(n)
            print(f"{isa:8s} {dtype} {pack:8s} threads={n}  {run_grid(dtype)}")
    finally:
        _core.set_min_work_per_thread(65536)
        _core.set_pack_min_rows(128)
        lstmcpp.set_num_threads(threads)


if __name__ == "__main__":
    main()
