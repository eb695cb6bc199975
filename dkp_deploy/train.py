"""The doping training recipe: gradual magnitude pruning of W_s plus annealed co-matrix regularization.

- Pruning (the paper's section 3.2, Zhu & Gupta 2017): W_s starts dense; from ``start_step`` to ``end_step``,
  every ``frequency`` steps, its density follows the cubic schedule
  ``d_t = d_f + (d_i - d_f) * (1 - (t - t_0) / (t_end - t_0))^3`` (t rounded down to the last pruning step),
  i.e. Zhu & Gupta's sparsity ``s_t = s_f + (s_i - s_f)(1 - progress)^3`` written for density d = 1 - s.
- CMR (section 5.3), as a drop rate r (the paper's "CMR dropout value"; keep probability 1 - r):
  ``constant``: r_0 throughout; ``linDec``: r_0 until pruning starts, then linearly to 0 at ``end_step`` (the
  decrease lasts exactly as long as the pruning), 0 afterwards; ``expDec``: r_0 until pruning starts, then
  proportional to the density of W_s, r_0 * d_t / d_i, and 0 once pruning has reached its target ("once W_s is
  pruned to the required sparsity, CMR converges to zero"). The paper uses linDec with r_0 = 0.7.

``DopingSchedule(...).step(model, step)`` applies both to every `DopedLinear` of a model; `train` is a small loop
around it with a tqdm progress bar.

Under ``torch.distributed`` (DDP): the schedule is a pure function of the step, so every rank has the same
target density; after each mask change `DopingSchedule.step` broadcasts the masks (and the pruned W_s) from
rank 0, so masks are identical on every rank. CMR's Bernoulli masks come from torch's global RNG: seed each
rank differently (`seed_per_rank`) to draw them per rank. Write checkpoints on rank 0 only (`is_main_process`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .nn.linear import DopedLinear, doped_layers

CMR_SCHEDULES = ("constant", "linDec", "expDec")


def _progress(step: int, start_step: int, end_step: int, frequency: int) -> float:
    """Fraction of the pruning done at `step`, advancing only on pruning steps (start + k * frequency)."""
    if step < start_step:
        return 0.0
    if step >= end_step:
        return 1.0
    done = (step - start_step) // frequency * frequency
    return done / (end_step - start_step)


def cubic_density(
    step: int,
    *,
    final_density: float,
    start_step: int,
    end_step: int,
    frequency: int = 1,
    initial_density: float = 1.0,
) -> float:
    """Zhu & Gupta's gradual-pruning target at `step`, as a density (fraction of W_s kept)."""
    p = _progress(step, start_step, end_step, frequency)
    return final_density + (initial_density - final_density) * (1.0 - p) ** 3


def cmr_rate(
    step: int,
    *,
    schedule: str,
    initial: float,
    start_step: int,
    end_step: int,
    frequency: int = 1,
    final_density: float = 0.0,
    initial_density: float = 1.0,
) -> float:
    """The CMR drop rate at `step` for schedule constant / linDec / expDec (see the module docstring)."""
    if schedule == "constant":
        return initial
    if schedule not in CMR_SCHEDULES:
        raise ValueError(f"CMR schedule must be one of {CMR_SCHEDULES}, got {schedule!r}")
    if step < start_step:
        return initial
    if step >= end_step:
        return 0.0
    if schedule == "linDec":
        return initial * (1.0 - (step - start_step) / (end_step - start_step))
    d = cubic_density(
        step,
        final_density=final_density,
        start_step=start_step,
        end_step=end_step,
        frequency=frequency,
        initial_density=initial_density,
    )
    return initial * d / initial_density


@dataclass
class DopingSchedule:
    """Pruning + CMR schedule for all doped layers of a model.

    ``final_density``: W_s density at the end (e.g. 0.047 for 95.3 % sparsity); pruning runs from ``start_step``
    to ``end_step``, updating masks every ``frequency`` steps. ``cmr``: the initial CMR drop rate;
    ``cmr_schedule``: "constant", "linDec" (the paper's choice) or "expDec".
    """

    final_density: float
    start_step: int
    end_step: int
    frequency: int = 100
    initial_density: float = 1.0
    cmr: float = 0.7
    cmr_schedule: str = "linDec"

    def __post_init__(self) -> None:
        if not 0.0 <= self.final_density <= self.initial_density <= 1.0:
            raise ValueError(
                f"need 0 <= final_density <= initial_density <= 1, got {self.final_density}, {self.initial_density}"
            )
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(f"need 0 <= start_step < end_step, got {self.start_step}, {self.end_step}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {self.frequency}")
        if not 0.0 <= self.cmr < 1.0:
            raise ValueError(f"cmr (a drop rate) must be in [0, 1), got {self.cmr}")
        if self.cmr_schedule not in CMR_SCHEDULES:
            raise ValueError(f"cmr_schedule must be one of {CMR_SCHEDULES}, got {self.cmr_schedule!r}")

    def density(self, step: int) -> float:
        return cubic_density(
            step,
            final_density=self.final_density,
            start_step=self.start_step,
            end_step=self.end_step,
            frequency=self.frequency,
            initial_density=self.initial_density,
        )

    def cmr_rate(self, step: int) -> float:
        return cmr_rate(
            step,
            schedule=self.cmr_schedule,
            initial=self.cmr,
            start_step=self.start_step,
            end_step=self.end_step,
            frequency=self.frequency,
            final_density=self.final_density,
            initial_density=self.initial_density,
        )

    def step(self, model: nn.Module | Iterable[DopedLinear], step: int) -> dict[str, float]:
        """Set every doped layer's W_s density and CMR rate for `step`; returns both.

        Masks are recomputed only where the target nonzero count changed (pruning steps), so calling this
        every training step costs next to nothing in between.
        """
        layers = doped_layers(model) if isinstance(model, nn.Module) else list(model)
        density, rate = self.density(step), self.cmr_rate(step)
        changed = False
        for layer in layers:
            if layer.nnz != round(density * layer.mask.numel()):
                layer.set_density(density)
                changed = True
            layer.cmr = rate
        if changed:  # the same on every rank: density depends on the step only
            broadcast_masks(layers)
        return {"density": density, "cmr": rate}


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    """True outside torch.distributed and on rank 0 inside it (the rank that writes checkpoints)."""
    return not _distributed() or torch.distributed.get_rank() == 0


def seed_per_rank(seed: int) -> int:
    """Seed torch's global RNG with ``seed + rank`` (CMR and dropout masks drawn per rank); returns that seed."""
    rank = torch.distributed.get_rank() if _distributed() else 0
    torch.manual_seed(seed + rank)
    return seed + rank


@torch.no_grad()
def broadcast_masks(model: nn.Module | Iterable[DopedLinear], src: int = 0) -> None:
    """Copy every doped layer's mask from rank `src` to all ranks and zero W_s outside it (no-op without
    torch.distributed), so that pruning decisions are identical everywhere even with ties in |W_s|."""
    if not _distributed():
        return
    layers = doped_layers(model) if isinstance(model, nn.Module) else list(model)
    for layer in layers:
        m = layer.mask.to(torch.uint8)
        torch.distributed.broadcast(m, src)
        layer.mask.copy_(m.bool())
        layer.W_s.mul_(layer.mask)


@torch.no_grad()
def apply_masks(model: nn.Module | Iterable[DopedLinear]) -> None:
    """Zero the pruned entries of every W_s. The forward pass ignores them anyway, but optimisers with momentum
    or weight decay (Adam, SGD+momentum) keep moving them; zeroing keeps W_s equal to what a checkpoint stores."""
    layers = doped_layers(model) if isinstance(model, nn.Module) else list(model)
    for layer in layers:
        if layer.nnz < layer.mask.numel():
            layer.W_s.mul_(layer.mask)


def train(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    schedule: DopingSchedule | None = None,
    steps: int | None = None,
    start_step: int = 0,
    max_grad_norm: float | None = None,
    progress: bool = True,
    desc: str = "train",
    lr_at: Callable[[int], float] | None = None,
) -> list[float]:
    """Run optimisation steps over `batches`: schedule -> loss_fn(model, batch) -> backward -> clip -> step -> masks.

    `steps` caps the number of batches (default: all); `lr_at(step)`, if given, sets every parameter group's
    learning rate before each step (e.g. SGD with the paper's per-epoch decay). Returns the loss per step. The
    model is put in training mode (CMR and dropout active); the progress bar shows the loss, W_s density and CMR rate.
    """
    model.train()
    layers = doped_layers(model)
    losses: list[float] = []
    total = steps
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)  # type: ignore[arg-type]
    bar = tqdm(batches, total=total, desc=desc, disable=not progress, leave=False)
    for i, batch in enumerate(bar):
        if steps is not None and i >= steps:
            break
        step = start_step + i
        state = schedule.step(model, step) if schedule is not None else {}
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step}")
        loss.backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        apply_masks(layers)
        losses.append(value)
        if progress:
            bar.set_postfix(loss=f"{losses[-1]:.4g}", **{k: f"{v:.3g}" for k, v in state.items()})
    bar.close()
    return losses


__all__ = [
    "CMR_SCHEDULES", "DopingSchedule", "apply_masks", "broadcast_masks", "cmr_rate", "cubic_density",
    "is_main_process", "seed_per_rank", "train",
]
