"""Word-level LM training pieces shared by the reproduction and the examples (Zaremba et al. 2014 style).

Truncated BPTT over a corpus laid out as ``batch`` parallel streams, the hidden state carried from one window to
the next (detached), cross-entropy per token; perplexity = exp(mean token loss). The optimisation loop itself is
`dkp_deploy.train.train` (pruning + CMR schedule, gradient clipping, progress bar).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def batchify(ids: np.ndarray, batch: int) -> torch.Tensor:
    """`ids` cut into `batch` contiguous streams: int64 ``[T, batch]`` (the tail that does not fit is dropped)."""
    steps = len(ids) // batch
    if steps < 2:
        raise ValueError(f"{len(ids)} tokens are too few for {batch} streams")
    return torch.from_numpy(np.ascontiguousarray(ids[: steps * batch].reshape(batch, steps).T))


def windows(data: torch.Tensor, bptt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, target) windows of up to `bptt` steps covering `data` ``[T, B]`` once, in order."""
    starts = range(0, len(data) - 1, bptt)
    return [(data[i : i + n], data[i + 1 : i + 1 + n]) for i in starts if (n := min(bptt, len(data) - 1 - i))]


def epochs(data: torch.Tensor, bptt: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """`steps` training windows, cycling over `data`; the flag is True at the start of each pass (reset state)."""
    ws = windows(data, bptt)
    for s in range(steps):
        yield (*ws[s % len(ws)], s % len(ws) == 0)


class LMLoss:
    """``loss_fn(model, (x, y, reset))`` for `dkp_deploy.train.train`, carrying the LSTM state between windows."""

    def __init__(self) -> None:
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, bool]) -> torch.Tensor:
        x, y, reset = batch
        if reset or self.state is None:
            self.state = None
        else:
            self.state = (self.state[0].detach(), self.state[1].detach())
        logits, self.state = model(x, self.state)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def perplexity(model: nn.Module, data: torch.Tensor, bptt: int = 35) -> float:
    """exp(mean cross-entropy per token) of `model` (eval mode: no dropout, no CMR) over `data` ``[T, B]``."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for x, y in windows(data, bptt):
        logits, state = model(x, state)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
        count += y.numel()
    model.train(was_training)
    return math.exp(total / count)


__all__ = ["LMLoss", "batchify", "epochs", "perplexity", "windows"]
