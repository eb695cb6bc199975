"""The input/output contract of every exported graph (ONNX and TFLite), shared by converters, validator, bench.

Names and layouts, by architecture and mode:

- ``mlp``: ``x`` float32 ``[batch, N]`` -> ``y`` ``[batch, M]`` (mode is ignored).
- ``lstm``, ``mode="sequence"``: ``x`` ``[T, batch, I]`` (``[batch, T, I]`` if batch_first), optional ``h0``,
  ``c0`` ``[L, batch, H]`` -> ``y`` (like x, with H), ``hn``, ``cn`` ``[L, batch, H]``; as torch.nn.LSTM.
- ``lstm``, ``mode="step"``: ``x_t`` ``[batch, I]``, ``h``, ``c`` ``[L, batch, H]`` -> ``y_t`` ``[batch, H]``,
  ``h_next``, ``c_next``.
- ``lstm_lm``: as ``lstm`` but ``x`` / ``x_t`` are int64 token ids (``[T, batch]`` / ``[batch]``) and ``y`` /
  ``y_t`` are logits over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import ModelSpec

MODES = ("sequence", "step")


@dataclass(frozen=True)
class TensorSig:
    name: str
    dtype: type  # np.float32 or np.int64
    shape: tuple  # ints, or the symbols "batch" / "time"
    optional: bool = False


def _check_mode(spec: ModelSpec, mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode if spec.is_recurrent else "sequence"


def inputs(spec: ModelSpec, mode: str = "sequence") -> list[TensorSig]:
    mode = _check_mode(spec, mode)
    if spec.arch == "mlp":
        first = next(b for b in spec.blocks if hasattr(b, "weight"))
        return [TensorSig("x", np.float32, ("batch", first.in_features))]
    lstm = spec.lstm
    assert lstm is not None
    L, H = lstm.num_layers, lstm.hidden_size
    tokens = spec.arch == "lstm_lm"
    dtype = np.int64 if tokens else np.float32
    feat = () if tokens else (lstm.input_size,)
    if mode == "step":
        return [
            TensorSig("x_t", dtype, ("batch", *feat)),
            TensorSig("h", np.float32, (L, "batch", H)),
            TensorSig("c", np.float32, (L, "batch", H)),
        ]
    seq = ("batch", "time") if lstm.batch_first else ("time", "batch")
    return [
        TensorSig("x", dtype, (*seq, *feat)),
        TensorSig("h0", np.float32, (L, "batch", H), optional=True),
        TensorSig("c0", np.float32, (L, "batch", H), optional=True),
    ]


def outputs(spec: ModelSpec, mode: str = "sequence") -> list[TensorSig]:
    mode = _check_mode(spec, mode)
    last = [b for b in spec.blocks if hasattr(b, "weight") and hasattr(b, "bias")]
    if spec.arch == "mlp":
        return [TensorSig("y", np.float32, ("batch", last[-1].out_features))]
    lstm = spec.lstm
    assert lstm is not None
    L, H = lstm.num_layers, lstm.hidden_size
    width = last[-1].out_features if spec.arch == "lstm_lm" else H
    state = (L, "batch", H)
    if mode == "step":
        return [
            TensorSig("y_t", np.float32, ("batch", width)),
            TensorSig("h_next", np.float32, state),
            TensorSig("c_next", np.float32, state),
        ]
    seq = ("batch", "time") if lstm.batch_first else ("time", "batch")
    return [
        TensorSig("y", np.float32, (*seq, width)),
        TensorSig("hn", np.float32, state),
        TensorSig("cn", np.float32, state),
    ]


def random_feeds(
    spec: ModelSpec,
    mode: str = "sequence",
    *,
    batch: int = 2,
    time: int = 5,
    seed: int = 0,
    with_state: bool = True,
) -> dict[str, np.ndarray]:
    """Seeded random inputs that match the signature (token ids drawn from the vocabulary)."""
    rng = np.random.default_rng(seed)
    sizes = {"batch": batch, "time": time}
    vocab = spec.blocks[0].weight.shape[0] if spec.arch == "lstm_lm" else 0
    feeds = {}
    for sig in inputs(spec, mode):
        if sig.optional and not with_state:
            continue
        shape = tuple(sizes.get(d, d) for d in sig.shape)
        if sig.dtype == np.int64:
            feeds[sig.name] = rng.integers(0, vocab, size=shape, dtype=np.int64)
        else:
            scale = 0.5 if sig.name in ("h", "c", "h0", "c0") else 1.0
            feeds[sig.name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return feeds
