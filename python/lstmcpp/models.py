"""The models from the project's notes, built on the C++ LSTM, each trainable with
:func:`lstmcpp.train.fit` and saved with :func:`lstmcpp.save`:

- :class:`CharLM`: embedding -> LSTM -> softmax over the next character, with ``generate``;
- :class:`Forecaster`: a window of a (scaled) series -> LSTM -> the next values;
- :class:`AttentionClassifier`: embedding -> LSTM -> attention pooling -> softmax over classes.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import io
from .forecasting import BASELINES, CALENDAR, baseline_forecasts, calendar_features, future_times
from ._lstm import LSTM
from .nn import AttentionPool, Embedding, Linear, Module, mse, softmax_cross_entropy

__all__ = ["CharLM", "Forecaster", "AttentionClassifier"]


def _child_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


class _Saved(Module):
    """Native files: the configuration is ``get_config()``, the arrays are the parameters (plus
    whatever ``_extra_arrays`` adds)."""

    _config: Dict[str, Any]

    def get_config(self) -> Dict[str, Any]:
        """The constructor's arguments: ``type(model)(**model.get_config())`` rebuilds it (as
        ``LSTM.get_config`` and Keras' layers do)."""
        return dict(self._config)

    def _extra_arrays(self) -> Dict[str, np.ndarray]:
        return {}

    def _load_extra_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        pass

    def _to_native(self):
        # A child that lstmcpp.quantize stored in a scheme keeps its own arrays (the indices too:
        # its parameters are only what trains); the configuration names it and its scheme.
        quantized = {name: child.scheme for name, child in self.children.items() if hasattr(child, "scheme")}
        state = {k: v for k, v in self.state_dict().items() if k.split(".")[0] not in quantized}
        for name in quantized:
            state.update({f"{name}.{k}": v for k, v in self.children[name]._to_native()[1].items()})
        config = {**self.get_config(), "quantized": quantized} if quantized else self.get_config()
        return config, {**state, **self._extra_arrays()}

    @classmethod
    def _from_native(cls, config: Dict[str, Any], arrays: Dict[str, np.ndarray]):
        config = dict(config)
        quantized = config.pop("quantized", {})
        model = cls(**config)
        extra = set(model._extra_arrays())
        if quantized:
            from .quantize import rebuild

            for name, scheme in quantized.items():
                prefix = name + "."
                twin = rebuild(model.children[name], {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)},
                               scheme)
                setattr(model, name, twin)
                model.children[name] = twin
            _load_some(model, arrays, skip=set(quantized))
        else:
            model.load_state_dict({k: v for k, v in arrays.items() if k not in extra})
        model._load_extra_arrays({k: v for k, v in arrays.items() if k in extra})
        return model


def _load_some(model: Module, arrays: Dict[str, np.ndarray], skip: set) -> None:
    """Load every parameter of ``model`` but its children named in ``skip`` (quantized children,
    made from their own arrays) from ``arrays``, all checked before any is copied."""
    own = {k: p for k, p in model.named_parameters() if k.split(".")[0] not in skip}
    missing = [k for k in own if k not in arrays]
    if missing:
        raise ValueError(f"state_dict: missing keys {missing}")
    for name, p in own.items():
        if p.shape != np.shape(arrays[name]):
            raise ValueError(f"state_dict[{name!r}]: expected shape {p.shape}, got {np.shape(arrays[name])}")
    for name, p in own.items():
        p[...] = arrays[name]


# ------------------------------------------------------------------------------------------------
# character language model


def text_batches(ids: np.ndarray, batch_size: int, seq_len: int, seed: Optional[int] = None) -> Callable[[], Iterator[Tuple[np.ndarray, np.ndarray]]]:
    """Batches ``(x (B,L), y (B,L))`` of a text's ids for :func:`fit`: ``batch_size`` parallel
    streams of the text (each starting at an offset drawn anew every pass), cut into chunks of
    ``seq_len`` in order, so the carried state always continues its own stream."""
    ids = np.asarray(ids)
    span = (len(ids) - 1) // batch_size
    if span < seq_len:
        raise ValueError(f"ids: {len(ids)} characters are too few for {batch_size} streams of chunks of {seq_len}")
    rng = np.random.default_rng(seed)

    def one_pass():
        shift = int(rng.integers(0, len(ids) - 1 - span * batch_size + 1))
        x_all = ids[shift : shift + span * batch_size].reshape(batch_size, span)
        y_all = ids[shift + 1 : shift + 1 + span * batch_size].reshape(batch_size, span)
        for start in range(0, span - seq_len + 1, seq_len):
            yield x_all[:, start : start + seq_len], y_all[:, start : start + seq_len]

    return one_pass


class CharLM(_Saved):
    """Predicts the next character: ``embedding (V,E) -> LSTM (H, layers) -> linear (H,V)``.

    Trained with truncated BPTT: :meth:`batches` cuts the text into ``batch_size`` parallel
    streams, and the LSTM state is carried from one chunk of ``seq_len`` characters to the next.

    >>> lm = CharLM.from_text(text, hidden_size=128, seed=0)
    >>> history = lstmcpp.train.fit(lm, lm.batches(lm.encode(text), 32, 100, seed=0), epochs=1)
    >>> print(lm.generate("def ", 200, temperature=0.8))
    """

    def __init__(self, vocab: str, embedding_dim: int = 64, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, dtype: str = "float32", seed: Optional[int] = None, *,
                 coupled_input_forget: bool = False, layer_norm: bool = False, mogrify_rounds: int = 0,
                 mogrify_rank: int = 0):
        super().__init__()
        if len(vocab) < 2 or len(set(vocab)) != len(vocab):
            raise ValueError("vocab: expected at least two distinct characters, each once")
        cell = dict(coupled_input_forget=coupled_input_forget, layer_norm=layer_norm, mogrify_rounds=mogrify_rounds,
                    mogrify_rank=mogrify_rank)
        self._config = dict(vocab=vocab, embedding_dim=embedding_dim, hidden_size=hidden_size, num_layers=num_layers,
                           dropout=dropout, dtype=dtype, seed=seed, **cell)
        self.vocab = vocab
        self._index = {ch: k for k, ch in enumerate(vocab)}
        rng = np.random.default_rng(seed)
        V = len(vocab)
        self.embedding = Embedding(V, embedding_dim, dtype=dtype, rng=rng)
        # time-major (T,B) inside, the LSTM's own layout: nothing is transposed on the way through
        self.lstm = LSTM(embedding_dim, hidden_size, num_layers, dropout=dropout, dtype=dtype, seed=_child_seed(rng),
                         **cell)
        self.head = Linear(hidden_size, V, dtype=dtype, rng=rng)
        self.children = {"embedding": self.embedding, "lstm": self.lstm, "head": self.head}
        self._state = None

    @classmethod
    def from_text(cls, text: str, **kwargs) -> "CharLM":
        """A model whose vocabulary is the characters of ``text``."""
        return cls("".join(sorted(set(text))), **kwargs)

    def encode(self, text: str) -> np.ndarray:
        """Character ids (int32); a character outside the vocabulary is a ValueError."""
        try:
            return np.fromiter((self._index[ch] for ch in text), dtype=np.int32, count=len(text))
        except KeyError as e:
            raise ValueError(f"text: character {e.args[0]!r} is not in the model's vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[int(k)] for k in ids)

    def batches(self, ids: np.ndarray, batch_size: int, seq_len: int, seed: Optional[int] = None) -> Callable[[], Iterator[Tuple[np.ndarray, np.ndarray]]]:
        """Batches ``(x (B,L), y (B,L))`` for :func:`fit`: :func:`text_batches`."""
        return text_batches(ids, batch_size, seq_len, seed)

    # the model

    def forward(self, ids: np.ndarray, state=None, training: bool = True):
        """``logits (B,T,V)`` for ``ids (B,T)``, the LSTM's final state, and the caches for
        :meth:`backward`."""
        logits, state, caches = self._forward(np.asarray(ids).T, state, training)
        return logits.transpose(1, 0, 2), state, caches

    def backward(self, caches, dlogits: np.ndarray) -> None:
        """Gradients for ``dlogits (B,T,V)`` into every parameter's ``grads``."""
        self._backward(caches, np.ascontiguousarray(np.asarray(dlogits).transpose(1, 0, 2)))

    def _forward(self, ids: np.ndarray, state, training: bool):
        """forward, time-major: ids (T,B) -> logits (T,B,V)."""
        if training:  # the LSTM reads the embedding by id: its input projection is made per token
            h, state, lstm_cache = self.lstm.forward_tokens(ids, self.embedding.params["weight"], state)
        else:
            (h, state), lstm_cache = self.lstm(self.embedding.forward(ids)[0], state), None
        logits, head_cache = self.head.forward(h)
        return logits, state, (lstm_cache, head_cache)

    def _backward(self, caches, dlogits: np.ndarray) -> None:
        lstm_cache, head_cache = caches
        dh = self.head.backward(head_cache, dlogits)
        d_embedding, _ = self.lstm.backward(lstm_cache, dh)
        self.embedding.grads["weight"] += d_embedding

    def reset_state(self) -> None:
        self._state = None

    def train_step(self, batch) -> Tuple[float, int]:
        x, y = batch
        logits, state, caches = self._forward(np.asarray(x).T, self._state, training=True)
        loss, dlogits = softmax_cross_entropy(logits, np.asarray(y).T)
        self._backward(caches, dlogits)
        self._state = state  # carried to the next chunk, not backpropagated into (truncated BPTT)
        return loss * y.size, y.size

    def evaluate(self, batch) -> Tuple[float, int]:
        x, y = batch
        logits, self._state, _ = self._forward(np.asarray(x).T, self._state, training=False)
        loss, _ = softmax_cross_entropy(logits, np.asarray(y).T)
        return loss * y.size, y.size

    def generate(self, prompt: str, n: int = 200, temperature: float = 1.0, top_k: Optional[int] = None,
                 seed: Optional[int] = None) -> str:
        """``n`` characters sampled after ``prompt`` (at least one character of it).

        ``temperature`` divides the logits (lower is more conservative; 0 picks the most
        likely character); ``top_k`` samples among the ``k`` most likely only.
        """
        if not prompt:
            raise ValueError("prompt: give at least one character")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        rng = np.random.default_rng(seed)
        ids = self.encode(prompt)[None, :]
        logits, state, _ = self.forward(ids, None, training=False)
        logits = logits[0, -1]
        out: List[int] = []
        for _ in range(n):
            if temperature == 0:
                k = int(np.argmax(logits))
            else:
                z = logits.astype(np.float64) / temperature
                if top_k is not None and top_k < z.size:
                    z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
                p = np.exp(z - z.max())
                k = int(rng.choice(p.size, p=p / p.sum()))
            out.append(k)
            logits, state, _ = self.forward(np.array([[k]], np.int32), state, training=False)
            logits = logits[0, -1]
        return self.decode(out)


# ------------------------------------------------------------------------------------------------
# time-series forecaster


class Forecaster(_Saved):
    """The next ``horizon`` values of a series from the last ``window``: ``LSTM -> linear`` on
    the last output.

    :meth:`fit` does all of it in one call (issue 14): it reads the season off the series (or takes
    ``season``), picks the simple baseline that forecasts the validation part best (the last value;
    the same season ago; that moved by the last seasonal difference; the average of the last few
    seasons moved to the last season's level; or a linear autoregression, one least-squares fit
    per step ahead on the last p values, p and its ridge chosen on the validation part too), and trains
    the network to predict each window's change from that baseline, in units of the window's own
    spread, so that a series leaving its training range is no harder than one inside it. The head
    starts at zero, so the untrained model is the baseline, and the model kept is the one with the
    best validation error (the baseline itself if training never beats it). ``quantiles`` adds
    outputs trained with the pinball loss, for :meth:`forecast`'s intervals.

    The older way (:meth:`fit_scaling`, :meth:`windows`, :func:`lstmcpp.train.fit`) scales the
    whole series to zero mean and unit variance per feature and predicts the scaled values.
    """

    # lstmcpp.forecasting's, and the fitted linear autoregression; the fitted model keeps its choice's index
    BASELINES = BASELINES + ("linear",)

    def __init__(self, n_features: int = 1, window: int = 30, horizon: int = 1, hidden_size: int = 64,
                 num_layers: int = 1, dtype: str = "float32", seed: Optional[int] = None, *,
                 season: Optional[int] = None, quantiles: Sequence[float] = (), calendar: Sequence[str] = (),
                 coupled_input_forget: bool = False, layer_norm: bool = False, mogrify_rounds: int = 0,
                 mogrify_rank: int = 0):
        super().__init__()
        cell = dict(coupled_input_forget=coupled_input_forget, layer_norm=layer_norm, mogrify_rounds=mogrify_rounds,
                    mogrify_rank=mogrify_rank)
        calendar = (calendar,) if isinstance(calendar, str) else tuple(calendar)
        if any(name not in CALENDAR for name in calendar) or len(set(calendar)) != len(calendar):
            raise ValueError(f"calendar: expected distinct names among {list(CALENDAR)}, got {list(calendar)}")
        quantiles = tuple(float(q) for q in quantiles)
        if any(not 0 < q < 1 for q in quantiles) or list(quantiles) != sorted(set(quantiles)):
            raise ValueError(f"quantiles: expected increasing values in (0, 1), got {quantiles}")
        if season is not None and (isinstance(season, bool) or not isinstance(season, int) or season < 0):
            raise ValueError(f"season: expected None (detect it) or an integer >= 0, got {season!r}")
        self._config = dict(n_features=n_features, window=window, horizon=horizon, hidden_size=hidden_size,
                           num_layers=num_layers, dtype=dtype, seed=seed, season=season, quantiles=list(quantiles),
                           calendar=list(calendar), **cell)
        rng = np.random.default_rng(seed)
        self.n_features, self.window, self.horizon = n_features, window, horizon
        self.quantiles, self.calendar = quantiles, calendar
        # the network reads each window step's values, then its calendar's sines and cosines
        self.lstm = LSTM(n_features + 2 * len(calendar), hidden_size, num_layers, batch_first=True, dtype=dtype,
                         seed=_child_seed(rng), **cell)
        self.head = Linear(hidden_size, horizon * n_features * (1 + len(quantiles)), dtype=dtype, rng=rng)
        self.children = {"lstm": self.lstm, "head": self.head}
        self.mean = np.zeros(n_features)
        self.std = np.ones(n_features)
        # set by fit(): the season used (0: none), the baseline's index in BASELINES (-1: not fitted),
        # and how many seasons the seasonal mean averages
        self.season = season
        self.baseline = -1
        self.seasons_averaged = 1
        # the linear baseline: (p F + 1, horizon F) coefficients on the last p values standardised
        # by the training series' per-feature centre and scale (the last row: the intercept)
        self.linear_coef = np.zeros((1, horizon * n_features))
        self.linear_center, self.linear_scale = np.zeros(n_features), np.ones(n_features)

    def _series(self, series: np.ndarray) -> np.ndarray:
        s = np.asarray(series, dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        if s.ndim != 2 or s.shape[1] != self.n_features:
            raise ValueError(f"series: expected shape (N,) or (N, {self.n_features}), got {np.shape(series)}")
        return s

    def fit_scaling(self, series: np.ndarray) -> None:
        s = self._series(series)
        self.mean, self.std = s.mean(0), np.maximum(s.std(0), 1e-12)

    def _scaled(self, series):
        return ((self._series(series) - self.mean) / self.std).astype(self.lstm.dtype)

    def windows(self, series: np.ndarray, batch_size: int = 32, shuffle: bool = True, seed: Optional[int] = None):
        """Batches ``(x (B,window,F), y (B,horizon,F))`` of the scaled series, for :func:`fit`."""
        if self.calendar:
            raise ValueError("calendar: features of the calendar need Forecaster.fit(series, times=...)")
        s = self._scaled(series)
        count = len(s) - self.window - self.horizon + 1
        if count < 1:
            raise ValueError(f"series: {len(s)} values are too few for window {self.window} and horizon {self.horizon}")
        rng = np.random.default_rng(seed)
        starts_all = np.arange(count)

        def one_pass():
            order = rng.permutation(starts_all) if shuffle else starts_all
            for k in range(0, count, batch_size):
                starts = order[k : k + batch_size]
                x = np.stack([s[i : i + self.window] for i in starts])
                y = np.stack([s[i + self.window : i + self.window + self.horizon] for i in starts])
                yield x, y

        return one_pass

    def forward(self, x: np.ndarray, training: bool = True):
        """``(B, horizon, F)`` predictions for windows ``x (B, window, F)`` (the quantile outputs,
        when the model has them, are :meth:`_outputs`'), and the caches for :meth:`backward`."""
        out, caches = self._outputs(x, training)
        return out[:, 0], caches

    def _outputs(self, x: np.ndarray, training: bool):
        """``(B, 1 + Q, horizon, F)``: the point forecast, then each quantile's."""
        if training:
            h, _, lstm_cache = self.lstm.forward(x, training=True)
        else:
            (h, _), lstm_cache = self.lstm(x), None
        pred, head_cache = self.head.forward(h[:, -1])
        return pred.reshape(len(x), 1 + len(self.quantiles), self.horizon, self.n_features), (lstm_cache, head_cache, h.shape)

    def backward(self, caches, dpred: np.ndarray) -> None:
        """``dpred``: the gradient of :meth:`forward`'s ``(B, horizon, F)``, or of :meth:`_outputs`'."""
        lstm_cache, head_cache, h_shape = caches
        if dpred.ndim == 3 and self.quantiles:  # the point forecast's gradient alone
            full = np.zeros((len(dpred), 1 + len(self.quantiles)) + dpred.shape[1:], dpred.dtype)
            full[:, 0] = dpred
            dpred = full
        dh = np.zeros(h_shape, dpred.dtype)
        dh[:, -1] = self.head.backward(head_cache, dpred.reshape(len(dpred), -1))
        self.lstm.backward(lstm_cache, dh)

    def reset_state(self) -> None:
        pass

    def train_step(self, batch) -> Tuple[float, int]:
        x, y = batch
        pred, caches = self.forward(x, training=True)
        loss, dpred = mse(pred, y)
        self.backward(caches, dpred)
        return loss * len(x), len(x)

    def evaluate(self, batch) -> Tuple[float, int]:
        x, y = batch
        pred, _ = self.forward(x, training=False)
        return mse(pred, y)[0] * len(x), len(x)

    def forecast(self, history: np.ndarray, steps: int, quantiles: Optional[Sequence[float]] = None, *,
                 times: Any = None):
        """The next ``steps`` values after ``history`` (at least ``window`` values; after :meth:`fit`,
        also at least a season and one), shaped ``(steps,)`` for a one-feature series given as
        ``(N,)``, else ``(steps, F)``. Further than ``horizon``, the forecasts are fed back. With
        ``quantiles`` (some of the model's, ``steps <= horizon``), returns ``(forecast, {q: values})``.
        A model with ``calendar`` features needs ``times``, one per value of ``history``; the
        forecasts' own times continue them at their last spacing."""
        s = self._series(history)
        times = self._times(times, len(s), "history")
        if quantiles is not None:
            missing = [q for q in quantiles if float(q) not in self.quantiles]
            if missing:
                raise ValueError(f"quantiles: {missing} are not among the model's {list(self.quantiles)}")
            if steps > self.horizon:
                raise ValueError(f"quantiles: only for steps <= horizon ({self.horizon}), got steps {steps}")
        if self.baseline < 0:  # the older way: the whole series scaled, one step block fed back at a time
            if quantiles is not None:
                raise ValueError("quantiles: come from a model trained by Forecaster.fit")
            return self._forecast_scaled(history, steps)
        need = self._history_length()
        if len(s) < need:
            raise ValueError(f"history: expected at least {need} values, got {len(s)}")
        out, bands = [], None
        while len(out) < steps:
            outputs, base, scale = self._window_outputs(s[None], None if times is None else times[None])
            values = (base + outputs * scale)[0]  # (1 + Q, horizon, F)
            if bands is None:
                bands = values[1:]
            out.extend(values[0])
            s = np.concatenate([s, values[0]])
            if times is not None:
                times = np.concatenate([times, future_times(times, self.horizon)])
        result = np.asarray(out[:steps])
        squeeze = (lambda a: a[..., 0]) if np.ndim(history) == 1 else (lambda a: a)
        if quantiles is None:
            return squeeze(result)
        return squeeze(result), {float(q): squeeze(bands[self.quantiles.index(float(q)), :steps]) for q in quantiles}

    def _forecast_scaled(self, history: np.ndarray, steps: int) -> np.ndarray:
        s = list(self._scaled(history)[-self.window :])
        if len(s) < self.window:
            raise ValueError(f"history: expected at least {self.window} values, got {len(s)}")
        out = []
        while len(out) < steps:
            pred, _ = self.forward(np.asarray(s[-self.window :])[None], training=False)
            for row in pred[0]:
                out.append(row)
                s.append(row)
        result = np.asarray(out[:steps], np.float64) * self.std + self.mean
        return result[:, 0] if np.ndim(history) == 1 else result

    # fit(): a window's change from a baseline, in the window's own units

    def _baseline_values(self, histories: np.ndarray, kind: int) -> np.ndarray:
        """(B, horizon, F) forecasts of baseline BASELINES[kind] from histories (B, n, F)."""
        if self.BASELINES[kind] == "linear":
            return self._linear_forecasts(histories, self.linear_coef)
        return baseline_forecasts(histories, self.BASELINES[kind], self.season, self.horizon, self.seasons_averaged)

    @property
    def linear_order(self) -> int:
        """p, the values the linear baseline reads."""
        return (len(self.linear_coef) - 1) // self.n_features

    def _linear_inputs(self, histories: np.ndarray, order: int) -> np.ndarray:
        """(B, order F): the last ``order`` values of histories (B, n, F), standardised."""
        last = histories[:, histories.shape[1] - order :]
        return ((last - self.linear_center) / self.linear_scale).reshape(len(histories), -1)

    def _linear_forecasts(self, histories: np.ndarray, coef: np.ndarray) -> np.ndarray:
        z = self._linear_inputs(histories, (len(coef) - 1) // self.n_features)
        out = (z @ coef[:-1] + coef[-1]).reshape(len(histories), self.horizon, self.n_features)
        return out * self.linear_scale + self.linear_center

    def _fit_linear(self, histories: np.ndarray, truth: np.ndarray, order: int, ridge: float) -> np.ndarray:
        """Coefficients of the direct autoregression of ``order`` with ridge penalty ``ridge`` (on
        the standardised values; none on the intercept), fitted to histories (B, n, F) -> truth (B, horizon, F)."""
        B = len(histories)
        z = self._linear_inputs(histories, order)
        target = ((truth - self.linear_center) / self.linear_scale).reshape(B, -1)
        design = np.concatenate([z, np.ones((B, 1))], axis=1)
        penalty = ridge * np.diag(np.r_[np.ones(z.shape[1]), 0.0])
        return np.linalg.solve(design.T @ design + penalty, design.T @ target)

    def _linear_candidates(self, season: int):
        """The orders p (at most the window) and ridge penalties the validation chooses among."""
        w = self.window
        orders = {season, 2 * season} if season else set()
        orders |= {w // 4, w // 2, w}
        return [(p, r) for p in sorted(o for o in orders if 2 <= o <= w) for r in (0.1, 10.0)]

    def _history_length(self) -> int:
        """The values a fitted model reads before each forecast: its window, and the seasons its
        baselines look back over."""
        return max(self.window, self.season * self.seasons_averaged + 1)

    def _times(self, times: Any, n: int, what: str) -> Optional[np.ndarray]:
        """``times`` (n,) as datetime64[s] for a model with calendar features (None otherwise)."""
        if not self.calendar:
            return None
        if times is None:
            raise ValueError(f"times: this Forecaster reads calendar features {list(self.calendar)}; pass times=, "
                             f"one per value of {what}")
        given = np.asarray(times)
        try:
            if given.dtype.kind not in "MUSO":  # numbers would pass as seconds since 1970
                raise TypeError
            t = given.astype("datetime64[s]")
        except (TypeError, ValueError):
            raise TypeError(f"times: expected datetimes (NumPy datetime64, pandas timestamps or ISO strings), got "
                            f"{given.dtype}") from None
        if t.shape != (n,):
            raise ValueError(f"times: expected shape ({n},), one per value of {what}, got {t.shape}")
        if np.any(np.isnat(t)) or np.any(np.diff(t.astype(np.int64)) <= 0):
            raise ValueError("times: expected increasing times, with none missing")
        return t

    def _window_inputs(self, histories: np.ndarray, times: Optional[np.ndarray] = None):
        """The network's input (B, window, F + 2C) for histories (B, n, F): the last ``window``
        values less the last one, over the window's mean absolute change (its own units), then the
        calendar features of their times (B, n); and that scale."""
        w = histories[:, -self.window :]
        scale = np.abs(np.diff(w, axis=1)).mean(axis=1, keepdims=True) + 1e-8 * (np.abs(w).mean(axis=1, keepdims=True) + 1)
        x = (w - w[:, -1:]) / scale
        if self.calendar:
            x = np.concatenate([x, calendar_features(times[:, -self.window :], self.calendar)], axis=-1)
        return x.astype(self.lstm.dtype), scale

    def _window_outputs(self, histories: np.ndarray, times: Optional[np.ndarray] = None):
        """(outputs (B, 1 + Q, horizon, F) in window units, baseline (B, 1, horizon, F), scale (B, 1, 1, F))."""
        x, scale = self._window_inputs(histories, times)
        outputs, _ = self._outputs(x, training=False)
        return outputs, self._baseline_values(histories, self.baseline)[:, None], scale[:, None]

    def fit(self, series: np.ndarray, *, times: Any = None, time_budget: Optional[float] = None, epochs: Optional[int] = None,
            val_fraction: float = 0.1, seed: int = 0, progress: bool = True, lr: float = 3e-3,
            batch_size: int = 64, patience: int = 20, log: Optional[Callable[[str], None]] = print) -> Dict[str, Any]:
        """Train on ``series`` (N,) or (N, F) in one call: the season (``season=None``: read off the
        series' autocorrelation, and said), the baseline, windows and targets, Adam with early
        stopping on the last ``val_fraction`` of the windows (in time order), the best model kept.
        Stops after ``epochs`` passes or ``time_budget`` seconds (default: 100 passes). ``times``
        (N,): the series' times, for a model with ``calendar`` features. Returns
        what it chose and measured: season, baseline, the validation error (mean absolute, in the
        series' units) of the baseline and of the model kept, epochs, seconds."""
        import time

        from .forecasting import detect_season
        from .optim import Adam, clip_grad_norm

        s = self._series(series)
        if not np.isfinite(s).all():
            raise ValueError("series: holds NaN or Inf")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction}")
        t = self._times(times, len(s), "series")
        say = log or (lambda message: None)
        season = self._config["season"]
        if season is None:
            season = detect_season(s[:, 0])
            say(f"season: {season} (read off the autocorrelation)" if season else "season: none found")
        self.season = season
        self.seasons_averaged = int(np.clip(len(s) // (2 * season), 1, 5)) if season else 1
        first = self._history_length()
        origins = np.arange(first, len(s) - self.horizon + 1)
        n_val = max(1, int(round(len(origins) * val_fraction)))
        if len(origins) < n_val + 2 * self.horizon + 1:
            raise ValueError(f"series: {len(s)} values are too few for window {self.window}, season {season} and "
                             f"horizon {self.horizon} (at least {first + 2 * self.horizon + n_val + 1})")
        val, train = origins[-n_val:], origins[: -n_val - self.horizon + 1]  # no training target in validation
        hist = lambda at: np.stack([s[o - first : o] for o in at])  # noqa: E731  (first: the history length)
        truth = lambda at: np.stack([s[o : o + self.horizon] for o in at])  # noqa: E731
        hist_times = lambda at: None if t is None else np.stack([t[o - first : o] for o in at])  # noqa: E731
        val_hist, val_truth, val_times = hist(val), truth(val), hist_times(val)
        train_hist, train_truth = hist(train), truth(train)
        # the linear baseline: each candidate fitted on the training windows, the best on validation
        before_val = s[: val[0]]
        self.linear_center, self.linear_scale = before_val.mean(0), np.maximum(before_val.std(0), 1e-12)
        fits = [self._fit_linear(train_hist, train_truth, p, r) for p, r in self._linear_candidates(season)]
        linear_errors = [float(np.abs(self._linear_forecasts(val_hist, c) - val_truth).mean()) for c in fits]
        self.linear_coef = fits[int(np.argmin(linear_errors))]
        errors = [float(np.abs(self._baseline_values(val_hist, k) - val_truth).mean()) for k in range(len(self.BASELINES))]
        self.baseline = int(np.argmin(errors))  # the first of equals: with no season, "last" before the seasonal ones
        say(f"baseline: {self.BASELINES[self.baseline]} (validation error {errors[self.baseline]:.4g})"
            + (f", order {self.linear_order}" if self.BASELINES[self.baseline] == "linear" else ""))

        x_train, scale = self._window_inputs(train_hist, hist_times(train))
        y_train = ((train_truth - self._baseline_values(train_hist, self.baseline)) / scale).astype(self.lstm.dtype)
        # start at the baseline, each quantile at the training targets' own
        for p in self.head.parameters():
            p[...] = 0
        if self.quantiles:
            bias = self.head.params["bias"].reshape(1 + len(self.quantiles), self.horizon, self.n_features)
            bias[1:] = np.quantile(y_train, self.quantiles, axis=0)
        taus_val = np.asarray(self.quantiles)[None, :, None, None]

        def val_error():
            """(the point forecast's mean absolute error, that plus the quantiles' mean pinball losses)."""
            outputs, base, sc = self._window_outputs(val_hist, val_times)
            values = base + outputs * sc
            error = float(np.abs(values[:, 0] - val_truth).mean())
            if not self.quantiles:
                return error, error
            r = val_truth[:, None] - values[:, 1:]
            return error, error + float(np.maximum(taus_val * r, (taus_val - 1) * r).mean(axis=(0, 2, 3)).sum())

        best, best_score = val_error()
        kept = {k: v.copy() for k, v in self.named_parameters()}
        rng = np.random.default_rng(seed)
        opt = Adam(self, lr=lr)
        taus = np.asarray(self.quantiles, self.lstm.dtype)[None, :, None, None]
        start, epoch, stale = time.perf_counter(), 0, 0
        max_epochs = epochs if epochs is not None else (10**9 if time_budget is not None else 100)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, unit="epoch", dynamic_ncols=True, leave=False, disable=None)
        while epoch < max_epochs and stale < patience:
            order = rng.permutation(len(train))
            for k in range(0, len(order), batch_size):
                batch = order[k : k + batch_size]
                opt.zero_grad()
                outputs, caches = self._outputs(x_train[batch], training=True)
                target = y_train[batch]
                grad = np.zeros_like(outputs)
                grad[:, 0] = 2 * (outputs[:, 0] - target) / target.size  # the point: squared error
                if self.quantiles:  # each quantile: the pinball loss
                    below = target[:, None] < outputs[:, 1:]
                    grad[:, 1:] = np.where(below, 1 - taus, -taus) / target.size
                self.backward(caches, grad)
                clip_grad_norm(opt.grads, 1.0)
                opt.step()
                if time_budget is not None and time.perf_counter() - start >= time_budget:
                    break
            epoch += 1
            error, score = val_error()  # the model kept: the best point forecast and quantiles together
            if score < best_score:
                best, best_score, stale = error, score, 0
                kept = {k: v.copy() for k, v in self.named_parameters()}
            else:
                stale += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"validation error {error:.4g} (best {best:.4g})")
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                break
        if bar is not None:
            bar.close()
        for k, v in self.named_parameters():
            v[...] = kept[k]
        seconds = time.perf_counter() - start
        say(f"kept the model with validation error {best:.4g} (the baseline's {errors[self.baseline]:.4g}) "
            f"after {epoch} epochs in {seconds:.0f} s")
        return dict(season=season, baseline=self.BASELINES[self.baseline], baseline_error=errors[self.baseline],
                    val_error=best, epochs=epoch, seconds=seconds)

    def _extra_arrays(self):
        return {"scaling.mean": np.asarray(self.mean, np.float64), "scaling.std": np.asarray(self.std, np.float64),
                "fitted.season": np.array(-1 if self.season is None else self.season, np.int64),
                "fitted.baseline": np.array(self.baseline, np.int64),
                "fitted.seasons_averaged": np.array(self.seasons_averaged, np.int64),
                "fitted.linear_coef": np.asarray(self.linear_coef, np.float64),
                "fitted.linear_center": np.asarray(self.linear_center, np.float64),
                "fitted.linear_scale": np.asarray(self.linear_scale, np.float64)}

    def _load_extra_arrays(self, arrays):
        self.mean, self.std = arrays["scaling.mean"], arrays["scaling.std"]
        if "fitted.baseline" in arrays:  # (files from before fit() have neither)
            season = int(arrays["fitted.season"])
            self.season = None if season < 0 else season
            self.baseline = int(arrays["fitted.baseline"])
            self.seasons_averaged = int(arrays["fitted.seasons_averaged"])
        if "fitted.linear_coef" in arrays:  # (files from before the linear baseline have none)
            self.linear_coef = arrays["fitted.linear_coef"]
            self.linear_center, self.linear_scale = arrays["fitted.linear_center"], arrays["fitted.linear_scale"]


# ------------------------------------------------------------------------------------------------
# sequence classifier with attention pooling


class AttentionClassifier(_Saved):
    """``embedding -> (bi)LSTM -> attention pooling (respecting lengths) -> linear -> softmax``.

    Batches are ``(ids (B,T), lengths (B,), labels (B,))``; :meth:`predict` returns the class
    probabilities and the attention weights over time.
    """

    def __init__(self, vocab_size: int, num_classes: int, embedding_dim: int = 32, hidden_size: int = 64,
                 attention_dim: int = 32, bidirectional: bool = True, dtype: str = "float32", seed: Optional[int] = None,
                 *, coupled_input_forget: bool = False, layer_norm: bool = False, mogrify_rounds: int = 0,
                 mogrify_rank: int = 0):
        super().__init__()
        cell = dict(coupled_input_forget=coupled_input_forget, layer_norm=layer_norm, mogrify_rounds=mogrify_rounds,
                    mogrify_rank=mogrify_rank)
        self._config = dict(vocab_size=vocab_size, num_classes=num_classes, embedding_dim=embedding_dim,
                           hidden_size=hidden_size, attention_dim=attention_dim, bidirectional=bidirectional,
                           dtype=dtype, seed=seed, **cell)
        rng = np.random.default_rng(seed)
        D = 2 if bidirectional else 1
        self.embedding = Embedding(vocab_size, embedding_dim, dtype=dtype, rng=rng)
        self.lstm = LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=bidirectional, dtype=dtype,
                         seed=_child_seed(rng), **cell)
        self.attention = AttentionPool(D * hidden_size, attention_dim, dtype=dtype, rng=rng)
        self.head = Linear(D * hidden_size, num_classes, dtype=dtype, rng=rng)
        self.children = {"embedding": self.embedding, "lstm": self.lstm, "attention": self.attention, "head": self.head}

    def forward(self, ids: np.ndarray, lengths: Optional[np.ndarray] = None, training: bool = True):
        if training:  # the LSTM reads the embedding by id: its input projection is made per token
            h, _, lstm_cache = self.lstm.forward_tokens(ids, self.embedding.params["weight"], lengths=lengths)
        else:
            (h, _), lstm_cache = self.lstm(self.embedding.forward(ids)[0], lengths=lengths), None
        (context, weights), attention_cache = self.attention.forward(h, lengths)
        logits, head_cache = self.head.forward(context)
        return logits, weights, (lstm_cache, attention_cache, head_cache)

    def backward(self, caches, dlogits: np.ndarray) -> None:
        lstm_cache, attention_cache, head_cache = caches
        dcontext = self.head.backward(head_cache, dlogits)
        dh = self.attention.backward(attention_cache, dcontext)
        d_embedding, _ = self.lstm.backward(lstm_cache, dh)
        self.embedding.grads["weight"] += d_embedding

    def reset_state(self) -> None:
        pass

    def train_step(self, batch) -> Tuple[float, int]:
        ids, lengths, labels = batch
        logits, _, caches = self.forward(ids, lengths, training=True)
        loss, dlogits = softmax_cross_entropy(logits, labels)
        self.backward(caches, dlogits)
        return loss * len(labels), len(labels)

    def evaluate(self, batch) -> Tuple[float, int]:
        ids, lengths, labels = batch
        logits, _, _ = self.forward(ids, lengths, training=False)
        return softmax_cross_entropy(logits, labels)[0] * len(labels), len(labels)

    def predict(self, ids: np.ndarray, lengths: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Class probabilities ``(B, classes)`` and attention weights ``(B, T)``."""
        logits, weights, _ = self.forward(ids, lengths, training=False)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True), weights


for _cls in (CharLM, Forecaster, AttentionClassifier):
    io.register(_cls.__name__, _cls, _cls._from_native)
