"""``fit``: the training loop for the models of :mod:`lstmcpp.models` (or any object that offers
the same four methods).

A model trained by ``fit`` provides:

- ``train_step(batch) -> (loss_sum, count)``: forward and backward on one batch, gradients
  added into the model's gradient arrays (``fit`` zeroes them before and steps after);
- ``evaluate(batch) -> (loss_sum, count)``: the loss without training;
- ``reset_state()``: called at the start of each pass over the data (models trained with
  truncated BPTT carry their LSTM state from one batch to the next and drop it here);
- ``parameters()`` and ``gradients()``: for the optimizer.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Union

from .optim import Adam, Optimizer, clip_grad_norm

__all__ = ["fit", "History"]

Batches = Union[Iterable[Any], Callable[[], Iterable[Any]]]


@dataclass
class History:
    train_loss: List[float] = field(default_factory=list)  # mean loss per item, one per epoch
    val_loss: List[float] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_val_loss: float = math.inf
    steps: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"  # "epochs", "early stopping" or "time budget"


_END = object()  # the end of a pass over the batches


def _batches(data: Batches) -> Iterable[Any]:
    return data() if callable(data) else data


def _evaluate(model: Any, data: Batches) -> float:
    model.reset_state()
    total, count = 0.0, 0
    for batch in _batches(data):
        loss, n = model.evaluate(batch)
        total += loss
        count += n
    model.reset_state()
    return total / max(count, 1)


def fit(
    model: Any,
    train_data: Batches,
    *,
    epochs: int = 1,
    optimizer: Optional[Optimizer] = None,
    val_data: Optional[Batches] = None,
    clip_norm: Optional[float] = None,
    schedule: Any = None,
    patience: Optional[int] = None,
    checkpoint: Union[str, "os.PathLike[str]", None] = None,
    time_budget: Optional[float] = None,
    progress: bool = True,
    unit: str = "items",
    log: Callable[[str], None] = print,
    communicator: Any = None,
) -> History:
    """Train ``model`` on ``train_data`` for ``epochs`` passes.

    Parameters
    ----------
    train_data, val_data : iterable of batches, or a callable returning one per pass
        A callable lets each pass shuffle anew (from its own seeded generator, so a run is
        deterministic for a given seed).
    optimizer : defaults to ``Adam(model, lr=1e-3)``.
    clip_norm : clip the gradients to this global norm before each step.
    schedule : anything with ``step()``, called after every optimizer step (``lstmcpp.optim``).
    patience : stop when the validation loss has not improved for this many epochs.
    checkpoint : save the model (``lstmcpp.save``) here whenever the validation loss improves
        (every epoch when there is no validation data).
    time_budget : seconds; stop (after validating) once the training has run this long.
    progress : show a tqdm progress bar with the running loss and items per second.
    communicator : an :mod:`lstmcpp.distributed` communicator: data-parallel training, each rank
        on its own ``train_data`` (its shard). Parameters start as rank 0's; each step averages
        the gradients with one all-reduce. Rank 0 alone shows progress, logs, validates (on its
        ``val_data``), writes checkpoints and watches the time budget; every rank gets its
        decisions and returns the same history. See :mod:`lstmcpp.distributed`.
    """
    from .io import save

    optimizer = optimizer or Adam(model, lr=1e-3)
    sync = None
    if communicator is not None and communicator.world_size > 1:
        from .distributed import GradientSync

        sync = GradientSync(communicator, optimizer.params, optimizer.grads)
        sync.broadcast_parameters()
    leader = communicator is None or communicator.rank == 0  # the rank that reports and decides
    history = History()
    start = time.perf_counter()
    bar = None
    if progress and leader:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, unit="batch", dynamic_ncols=True, leave=True, mininterval=0.5, disable=None)  # off when not a terminal
    try:
        for epoch in range(epochs):
            model.reset_state()
            total, count, t_start = 0.0, 0, time.perf_counter()
            out_of_time = False
            batches = iter(_batches(train_data))
            while True:
                batch = next(batches, _END)
                optimizer.zero_grad()
                loss, n = model.train_step(batch) if batch is not _END else (0.0, 0)
                over_budget = leader and time_budget is not None and time.perf_counter() - start >= time_budget
                if sync is not None:  # every rank, until every rank has run out of batches
                    active, loss, n, over_budget = sync.average_gradients(batch is not _END, loss, n, over_budget)
                    if active == 0:
                        break
                elif batch is _END:
                    break
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the training loss became {loss} at step {history.steps}; lower the learning rate or clip the gradients")
                if clip_norm is not None:
                    clip_grad_norm(optimizer.grads, clip_norm)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                history.steps += 1
                total += loss
                count += n
                if bar is not None:
                    rate = count / max(time.perf_counter() - t_start, 1e-9)
                    bar.set_description(f"epoch {epoch + 1}/{epochs}")
                    bar.set_postfix_str(f"loss {total / count:.4f}, {rate:,.0f} {unit}/s, lr {optimizer.lr:.2e}")
                    bar.update(1)
                if over_budget:
                    out_of_time = True
                    break
            history.train_loss.append(total / max(count, 1))
            message = f"epoch {epoch + 1}: train loss {history.train_loss[-1]:.4f}"
            improved, val = True, None
            if leader and val_data is not None:
                val = _evaluate(model, val_data)
                improved = val < history.best_val_loss
            if sync is not None:  # rank 0's validation reaches every rank
                has_val, shared_val, improved = sync.decide([val is not None, val or 0.0, improved])
                val, improved = (float(shared_val) if has_val else None), bool(improved)
            if val is not None:
                history.val_loss.append(val)
                message += f", validation loss {val:.4f}" + (" (best)" if improved else "")
                if improved:
                    history.best_val_loss, history.best_epoch = val, epoch
            else:
                history.best_epoch = epoch
            if checkpoint is not None and improved and leader:
                save(model, checkpoint)
            if bar is not None:
                bar.write(message)
            elif log is not None and leader:
                log(message)
            if out_of_time:
                history.stopped = "time budget"
                break
            if patience is not None and history.best_epoch is not None and epoch - history.best_epoch >= patience:
                history.stopped = "early stopping"
                break
    finally:
        if bar is not None:
            bar.close()
    history.seconds = time.perf_counter() - start
    return history
