"""The measured comparisons the README shows for the cell variants (SPEC §7): their learning
curves on the demo's text (``python -m lstmcpp compare-cells``), and how the gradient flows back
through time in a tanh RNN, the LSTM and each variant (``python -m lstmcpp gradient-flow``). The
plots need matplotlib (``pip install matplotlib``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import reference
from ._lstm import LSTM
from .models import CharLM
from .optim import Adam, clip_grad_norm
from .tasks import CELLS, held_out_size

__all__ = ["Curve", "compare_cells", "common_step", "plot_curves", "gradient_flow", "plot_gradient_flow"]


@dataclasses.dataclass
class Curve:
    """One cell's training run: the validation loss (nats per character) after each number of steps,
    and the training time (seconds, validation excluded) it took to get there."""

    cell: str
    parameters: int
    steps: List[int]
    seconds: List[float]
    val_loss: List[float]

    @property
    def seconds_per_step(self) -> float:
        return self.seconds[-1] / max(self.steps[-1], 1)

    def loss_at_step(self, step: int) -> float:
        """The validation loss measured at ``step`` (a step the curve validated at)."""
        return self.val_loss[self.steps.index(step)]


def common_step(curves: List[Curve]) -> int:
    """The most steps every curve validated at (the last is where each stopped; before it, every
    ``eval_every`` steps)."""
    return min(max(s for s in c.steps if all(s in d.steps for d in curves)) for c in curves)


def compare_cells(text: str, cells: Sequence[str] = tuple(CELLS), *, seconds: float = 60.0, eval_every: int = 25,
                  eval_batches: int = 8, embedding_dim: int = 64, hidden_size: int = 256, batch: int = 32,
                  seq_len: int = 100, lr: float = 3e-3, seed: int = 0,
                  log: Optional[Callable[[str], None]] = None) -> List[Curve]:
    """Train a :class:`CharLM` with each cell on ``text`` for the same training time, as the demo
    does (Adam, gradients clipped to norm 1, truncated BPTT), validating every ``eval_every`` steps
    on the first ``eval_batches`` batches of the held-out end of the text."""
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise ValueError(f"cells: expected some of {list(CELLS)}, got {unknown}")
    held_out = held_out_size(len(text), batch, seq_len)
    curves = []
    for cell in cells:
        lm = CharLM.from_text(text, embedding_dim=embedding_dim, hidden_size=hidden_size, seed=seed, **CELLS[cell])
        ids = lm.encode(text)
        train_ids, val_ids = ids[:-held_out], ids[-held_out:]
        val = list(lm.batches(val_ids, batch, seq_len, seed=0)())[:eval_batches]
        train = lm.batches(train_ids, batch, seq_len, seed=seed)
        opt = Adam(lm, lr=lr)
        curve = Curve(cell, lm.num_parameters(), [0], [0.0], [_validate(lm, val)])
        trained, step = 0.0, 0
        while trained < seconds:
            lm.reset_state()
            for x_y in train():
                start = time.perf_counter()
                opt.zero_grad()
                lm.train_step(x_y)
                clip_grad_norm(opt.grads, 1.0)
                opt.step()
                trained += time.perf_counter() - start
                step += 1
                if step % eval_every == 0:
                    curve.steps.append(step)
                    curve.seconds.append(trained)
                    curve.val_loss.append(_validate(lm, val))
                if trained >= seconds:
                    break
        if curve.steps[-1] != step:  # and where it stopped
            curve.steps.append(step)
            curve.seconds.append(trained)
            curve.val_loss.append(_validate(lm, val))
        if log is not None:
            log(f"  {cell}: {step} steps in {trained:.0f} s, validation loss {curve.val_loss[-1]:.3f}")
        curves.append(curve)
    return curves


def _validate(lm: CharLM, batches) -> float:
    """Mean loss per character over ``batches`` from a fresh state (the training state kept)."""
    carried = lm._state
    lm.reset_state()
    total = count = 0.0
    for x_y in batches:
        loss, n = lm.evaluate(x_y)
        total, count = total + loss, count + n
    lm._state = carried
    return total / count


def plot_curves(curves: List[Curve], path: str, title: str = "") -> None:
    """Validation loss against training time and against steps, one line per cell."""
    plt = _pyplot()
    fig, (by_time, by_step) = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in curves:
        by_time.plot(c.seconds, c.val_loss, label=f"{c.cell} ({1e3 * c.seconds_per_step:.0f} ms/step)")
        by_step.plot(c.steps, c.val_loss, label=c.cell)
    by_time.set_xlabel("training time (s)")
    by_step.set_xlabel("steps (batches of 32 x 100 characters)")
    for ax in (by_time, by_step):
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_ylim(top=min(max(c.val_loss[1] for c in curves if len(c.val_loss) > 1), 4.0))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# gradient flow


GRADIENT_FLOW_MODELS = {  # label -> LSTM arguments (the tanh RNN is the reference's)
    "LSTM": {},
    "LSTM, forget bias 1": dict(forget_bias=1.0),
    "layer-norm LSTM": dict(layer_norm=True),
    "CIFG": dict(coupled_input_forget=True),
    "Mogrifier (5 rounds)": dict(mogrify_rounds=5),
}


def gradient_flow(T: int = 100, input_size: int = 16, hidden_size: int = 64, seed: int = 0) -> Dict[str, np.ndarray]:
    """|dL/dx_t| (the norm over the input's features) for t = 0..T-1, where L is a random
    projection of the output at the last step only, for a tanh RNN (reference.rnn_tanh) and the
    LSTM and its variants, each at its default initialisation, on the same random sequence, in
    float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, 1, input_size))
    r = rng.standard_normal((1, hidden_size))
    flows = {}
    params = reference.init_rnn_tanh(input_size, hidden_size, seed=seed)
    _, cache = reference.rnn_tanh_forward(params, x)
    dy = np.zeros((T, 1, hidden_size))
    dy[-1] = r
    flows["tanh RNN"] = np.linalg.norm(reference.rnn_tanh_backward(cache, dy)[:, 0], axis=1)
    for label, kw in GRADIENT_FLOW_MODELS.items():
        model = LSTM(input_size, hidden_size, dtype="float64", seed=seed, **kw)
        _, _, cache = model.forward(x)
        dx, _ = model.backward(cache, dy)
        flows[label] = np.linalg.norm(dx[:, 0], axis=1)
    return flows


def plot_gradient_flow(flows: Dict[str, np.ndarray], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, g in flows.items():
        ax.semilogy(np.arange(len(g)), np.maximum(g, 1e-300), label=label, linestyle="--" if label == "tanh RNN" else "-")
    ax.set_xlabel("time step t (the loss reads the last step's output only)")
    ax.set_ylabel("|dL/dx_t|")
    ax.set_title("How far back the gradient reaches")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
