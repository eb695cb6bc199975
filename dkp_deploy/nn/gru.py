"""`DopedGRU` (and the shared recurrent base of `DopedRNN`): torch's GRU with W_ih and W_hh doped separately."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .linear import DopedLinear
from .recurrent_config import RecurrentConfig


class _DopedRecurrent(RecurrentConfig, nn.Module):
    """Layers x directions of (W_ih, W_hh) DopedLinear pairs, torch's layout: ``cells_ih[k*D + d]`` is
    G*H x I_k (I_0 = input_size, I_k = D*H), ``cells_hh[k*D + d]`` G*H x H, biases b_ih / b_hh."""

    GATES = 1
    NAME = "recurrent"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        **doping: Any,
    ) -> None:
        super().__init__()
        self._set_config(input_size, hidden_size, num_layers, bidirectional, batch_first, dropout)
        H, D, G = self.hidden_size, self.num_directions, self.GATES
        self.cells_ih = nn.ModuleList(
            DopedLinear(input_size if k == 0 else D * H, G * H, bias, **doping)
            for k in range(num_layers)
            for _ in range(D)
        )
        self.cells_hh = nn.ModuleList(DopedLinear(H, G * H, bias, **doping) for _ in range(num_layers * D))

    @classmethod
    def from_cells(
        cls,
        cells_ih: list[DopedLinear],
        cells_hh: list[DopedLinear],
        input_size: int,
        hidden_size: int,
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        **extra: Any,
    ) -> Any:
        """A module around existing layers (cells_ih[k*D + d]: G*H x I_k, cells_hh[k*D + d]: G*H x H)."""
        H, D, G = int(hidden_size), 2 if bidirectional else 1, cls.GATES
        if not cells_ih or len(cells_ih) % D or len(cells_ih) != len(cells_hh):
            raise ValueError(f"need equally many cells_ih and cells_hh, a positive multiple of {D}")
        for j, (ih, hh) in enumerate(zip(cells_ih, cells_hh)):
            want = (G * H, input_size if j < D else D * H)
            if (ih.out_features, ih.in_features) != want or (hh.out_features, hh.in_features) != (G * H, H):
                raise ValueError(
                    f"cell {j}: shapes {ih.out_features} x {ih.in_features}, "
                    f"{hh.out_features} x {hh.in_features}; expected {want}, {(G * H, H)}"
                )
        mod = cls.__new__(cls)
        nn.Module.__init__(mod)
        mod._set_config(input_size, H, len(cells_ih) // D, bidirectional, batch_first, dropout)
        for key, value in extra.items():
            setattr(mod, key, value)
        mod.cells_ih, mod.cells_hh = nn.ModuleList(cells_ih), nn.ModuleList(cells_hh)
        return mod

    def _step(self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__} expects a 2-D or 3-D input, got shape {tuple(input.shape)}")
        unbatched = input.dim() == 2
        if unbatched:
            input = input.unsqueeze(1)
            hx = hx.unsqueeze(1) if hx is not None else None
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects {self.input_size} input features, got {input.shape[-1]}")
        D, H = self.num_directions, self.hidden_size
        if hx is None:
            hx = input.new_zeros(self.num_layers * D, input.shape[1], H)
        layer_input, h_n = input, []
        for k in range(self.num_layers):
            outs = []
            for d in range(D):
                j = k * D + d
                seq = layer_input.flip(0) if d else layer_input
                gi_all = self.cells_ih[j](seq)  # W_ih x for every time step in one matmul; only W_hh h is per step
                h, steps = hx[j], []
                for gi in gi_all.unbind(0):
                    h = self._step(gi, self.cells_hh[j](h), h)
                    steps.append(h)
                out = torch.stack(steps) if steps else seq.new_zeros(0, seq.shape[1], H)
                outs.append(out.flip(0) if d else out)
                h_n.append(h)
            layer_input = outs[0] if D == 1 else torch.cat(outs, dim=-1)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        output, hn = layer_input, torch.stack(h_n)
        if unbatched:
            return output.squeeze(1), hn.squeeze(1)
        return (output.transpose(0, 1) if self.batch_first else output), hn

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for flag in ("bidirectional", "batch_first"):
            if getattr(self, flag):
                s += f", {flag}=True"
        if self.dropout:
            s += f", dropout={self.dropout:g}"
        return s


class DopedGRU(_DopedRecurrent):
    """Drop-in for `torch.nn.GRU` with doped W_ih (3H x I_k) and W_hh (3H x H), torch's gate order r, z, n:

    r = sig(W_ir x + b_ir + W_hr h + b_hr), z likewise, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h. Layout and call contract as `torch.nn.GRU` (``gru(x, h0=None) -> (output, h_n)``);
    ``**doping`` goes to every DopedLinear (structure, kron_shape, rank, hmd_rows, density, cmr, device, dtype).
    """

    GATES = 3

    def _step(self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h


__all__ = ["DopedGRU"]
