"""`DopedRNN`: torch's Elman RNN, h' = act(W_ih x + b_ih + W_hh h + b_hh), with W_ih and W_hh doped separately."""

from __future__ import annotations

from typing import Any

import torch

from .gru import _DopedRecurrent
from .linear import DopedLinear

NONLINEARITIES = ("tanh", "relu")


class DopedRNN(_DopedRecurrent):
    """Drop-in for `torch.nn.RNN`: ``cells_ih[k*D + d]`` H x I_k, ``cells_hh[k*D + d]`` H x H (biases b_ih, b_hh);
    ``nonlinearity`` "tanh" or "relu"; other arguments and the call contract as `DopedGRU` / `torch.nn.RNN`."""

    GATES = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        **kwargs: Any,
    ) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, **kwargs)
        self.nonlinearity = nonlinearity

    @classmethod
    def from_cells(  # type: ignore[override]
        cls,
        cells_ih: list[DopedLinear],
        cells_hh: list[DopedLinear],
        input_size: int,
        hidden_size: int,
        *,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
    ) -> DopedRNN:
        """A DopedRNN around existing layers (cells_ih[k*D + d]: H x I_k, cells_hh[k*D + d]: H x H)."""
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        return super().from_cells(
            cells_ih,
            cells_hh,
            input_size,
            hidden_size,
            bidirectional=bidirectional,
            batch_first=batch_first,
            dropout=dropout,
            nonlinearity=nonlinearity,
        )

    def _step(self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(gi + gh) if self.nonlinearity == "tanh" else torch.relu(gi + gh)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


__all__ = ["DopedRNN", "NONLINEARITIES"]
