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
        """Batches ``(x (B,L), y (B,L))`` for :func:`fit`: ``batch_size`` parallel streams of the
        text (each starting at an offset drawn anew every pass), cut into chunks of ``seq_len``
        in order, so the carried state always continues its own stream."""
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
    the last output. Series are scaled to zero mean and unit variance per feature (fitted by
    :meth:`fit_scaling`, saved with the model); :meth:`forecast` predicts further ahead by
    feeding its predictions back.
    """

    def __init__(self, n_features: int = 1, window: int = 30, horizon: int = 1, hidden_size: int = 64,
                 num_layers: int = 1, dtype: str = "float32", seed: Optional[int] = None, *,
                 coupled_input_forget: bool = False, layer_norm: bool = False, mogrify_rounds: int = 0,
                 mogrify_rank: int = 0):
        super().__init__()
        cell = dict(coupled_input_forget=coupled_input_forget, layer_norm=layer_norm, mogrify_rounds=mogrify_rounds,
                    mogrify_rank=mogrify_rank)
        self._config = dict(n_features=n_features, window=window, horizon=horizon, hidden_size=hidden_size,
                           num_layers=num_layers, dtype=dtype, seed=seed, **cell)
        rng = np.random.default_rng(seed)
        self.n_features, self.window, self.horizon = n_features, window, horizon
        self.lstm = LSTM(n_features, hidden_size, num_layers, batch_first=True, dtype=dtype, seed=_child_seed(rng),
                         **cell)
        self.head = Linear(hidden_size, horizon * n_features, dtype=dtype, rng=rng)
        self.children = {"lstm": self.lstm, "head": self.head}
        self.mean = np.zeros(n_features)
        self.std = np.ones(n_features)

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
        if training:
            h, _, lstm_cache = self.lstm.forward(x, training=True)
        else:
            (h, _), lstm_cache = self.lstm(x), None
        pred, head_cache = self.head.forward(h[:, -1])
        return pred.reshape(len(x), self.horizon, self.n_features), (lstm_cache, head_cache, h.shape)

    def backward(self, caches, dpred: np.ndarray) -> None:
        lstm_cache, head_cache, h_shape = caches
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

    def forecast(self, history: np.ndarray, steps: int) -> np.ndarray:
        """The next ``steps`` values after ``history`` (at least ``window`` values), unscaled,
        shaped ``(steps,)`` for a one-feature series given as ``(N,)``, else ``(steps, F)``."""
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

    def _extra_arrays(self):
        return {"scaling.mean": np.asarray(self.mean, np.float64), "scaling.std": np.asarray(self.std, np.float64)}

    def _load_extra_arrays(self, arrays):
        self.mean, self.std = arrays["scaling.mean"], arrays["scaling.std"]


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
