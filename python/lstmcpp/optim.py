"""Optimizers (SGD, Adam, AdamW), gradient clipping by global norm, learning-rate schedules.

An optimizer takes a model (anything with ``parameters()`` and ``gradients()`` in the same
order: an :class:`lstmcpp.LSTM`, an :mod:`lstmcpp.nn` module, a model from
:mod:`lstmcpp.models`) and updates its parameter arrays in place from their gradients.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import numpy as np

from . import _core

_ADAM_KERNELS = {np.float32: _core.adam_update_f32, np.float64: _core.adam_update_f64}

__all__ = ["SGD", "Adam", "AdamW", "clip_grad_norm", "StepLR", "CosineWithWarmup"]


class Optimizer:
    def __init__(self, model: Any, lr: float):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.params: List[np.ndarray] = list(model.parameters())
        self.grads: List[np.ndarray] = list(model.gradients())
        if len(self.params) != len(self.grads) or any(p.shape != g.shape for p, g in zip(self.params, self.grads)):
            raise ValueError("model: parameters() and gradients() do not pair up")
        self.lr = float(lr)
        self.steps = 0

    def zero_grad(self) -> None:
        for g in self.grads:
            g[...] = 0

    def step(self) -> None:
        self.steps += 1
        for k, (p, g) in enumerate(zip(self.params, self.grads)):
            self._update(k, p, g)

    def _update(self, k: int, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        return {"lr": self.lr, "steps": self.steps}


class SGD(Optimizer):
    """``p -= lr * (g + weight_decay * p)``, with (Nesterov) momentum as PyTorch defines it."""

    def __init__(self, model: Any, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(model, lr)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.velocity = [np.zeros_like(p) for p in self.params]

    def _update(self, k, p, g):
        d = g + self.weight_decay * p if self.weight_decay else g
        if self.momentum:
            v = self.velocity[k]
            v *= self.momentum
            v += d
            d = d + self.momentum * v if self.nesterov else v
        p -= self.lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba); ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2)."""

    decoupled = False

    def __init__(self, model: Any, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(model, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        for p, g in zip(self.params, self.grads):
            if p.dtype.type not in _ADAM_KERNELS or g.dtype != p.dtype or not (p.flags.c_contiguous and g.flags.c_contiguous):
                raise TypeError(f"model: Adam updates C-contiguous float32 or float64 parameters, got a {p.dtype} "
                                f"parameter of shape {p.shape}")
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]

    def _update(self, k, p, g):
        # one pass over p, g, m and v in C++: m and v move to their running averages of g and
        # g*g, and p -= lr * m_hat / (sqrt(v_hat) + eps) with the usual bias corrections
        _ADAM_KERNELS[p.dtype.type](p, g, self.m[k], self.v[k], self.lr, self.beta1, self.beta2, self.eps,
                                    self.weight_decay, self.decoupled, self.steps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay``."""

    decoupled = True

    def __init__(self, model: Any, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(model, lr, betas, eps, weight_decay)


def clip_grad_norm(grads: Any, max_norm: float) -> float:
    """Scale the gradients (a list of arrays, or a model) so their global L2 norm is at most
    ``max_norm``; returns the norm before clipping."""
    if hasattr(grads, "gradients"):
        grads = grads.gradients()
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


class StepLR:
    """Multiply the learning rate by ``gamma`` every ``step_size`` calls of :meth:`step`."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base_lr, self.count = optimizer.lr, 0

    def step(self) -> float:
        self.count += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.count // self.step_size)
        return self.optimizer.lr


class CosineWithWarmup:
    """Linear warm-up for ``warmup`` steps, then a cosine decay to ``min_lr`` at ``total`` steps."""

    def __init__(self, optimizer: Optimizer, warmup: int, total: int, min_lr: float = 0.0):
        if total <= 0 or warmup < 0:
            raise ValueError("total must be > 0 and warmup >= 0")
        self.optimizer, self.warmup, self.total, self.min_lr = optimizer, warmup, total, min_lr
        self.base_lr, self.count = optimizer.lr, 0
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, count: int) -> float:
        if count < self.warmup:
            return self.base_lr * (count + 1) / self.warmup
        progress = min(1.0, (count - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def step(self) -> float:
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)
        return self.optimizer.lr
