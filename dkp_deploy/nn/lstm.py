"""`DopedLSTM`: an LSTM whose per-layer gate matrix 4H x (I+H) is one `DopedLinear` on [x_t, h_{t-1}]."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from .linear import DopedLinear
from .recurrent_config import RecurrentConfig

State = tuple[torch.Tensor, torch.Tensor]


def lstm_gate_weights(lstm: nn.LSTM) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per layer of a `torch.nn.LSTM`: its gate matrix [W_ih, W_hh] (4H x (I+H)) and bias b_ih + b_hh (None
    without bias), as `DopedLSTM` holds them. InputError for bidirectional or projected LSTMs."""
    if lstm.bidirectional or lstm.proj_size:
        raise InputError("only unidirectional nn.LSTM without proj_size maps to a DopedLSTM / spec")
    out = []
    for k in range(lstm.num_layers):
        w = torch.cat([getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")], dim=1)
        b = getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}") if lstm.bias else None
        out.append((w, b))
    return out


def _is_one_kron_shape(value: Any) -> bool:
    return len(value) == 2 and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, int) for v in pair) for pair in value
    )


def _run_direction(
    cell: DopedLinear, seq: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer, one direction over seq [T, B, I_k] (already in its reading order): outputs [T, B, H], h, c."""
    # W_s [x_t; h] = W_s[:, :I] x_t + W_s[:, I:] h: mask once per sequence, input columns for all steps in one
    # matmul; the structured path mixes x and h columns, so it runs per step (it is small)
    w_s = cell.sparse_weight()
    n_in = seq.shape[-1]
    ys_input = F.linear(seq, w_s[:, :n_in])
    w_sh = w_s[:, n_in:]
    outputs = []
    for t, x_t in enumerate(seq.unbind(0)):
        y_s = torch.addmm(ys_input[t], h, w_sh.t())
        gates = cell.combine(cell.structured_forward(torch.cat([x_t, h], dim=-1)), y_s)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    out = torch.stack(outputs) if outputs else seq.new_zeros(0, seq.shape[1], h.shape[-1])
    return out, h, c


class DopedLSTM(RecurrentConfig, nn.Module):
    """Drop-in for `torch.nn.LSTM` (no projections) with doped gate matrices.

    Layer k, direction d computes gates = W_k [x_t, h_{t-1}] + b_k with W_k a `DopedLinear` of shape 4H x (I_k + H)
    (the paper's sizing: 2600 x 1300 for H = 650) and torch's gate order (i, f, g, o); its single bias plays the
    role of torch's b_ih + b_hh. Call and return contract as torch.nn.LSTM: ``lstm(x, (h0, c0)=None)`` ->
    ``(output, (h_n, c_n))``, x ``[T, B, I]`` (``[B, T, I]`` if batch_first, or unbatched ``[T, I]``), states
    ``[num_layers * D, B, H]`` (D = 2 if ``bidirectional``). ``self.cells[k * D + d]`` is layer k's direction d
    (d = 1 reads the sequence backwards); layers k > 0 take the D * H concatenated outputs.
    ``dropout`` applies to every layer's output but the last, in training, as torch does.

    ``**doping`` goes to every layer's DopedLinear (structure, kron_shape, rank, hmd_rows, density, cmr, bias,
    device, dtype); ``kron_shape`` may also be a list with one shape per layer (layer 0 is 4H x (I+H), the
    others 4H x (D*H + H)); with D = 2 both directions of a layer share its shape.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        **doping: Any,
    ) -> None:
        super().__init__()
        self._set_config(input_size, hidden_size, num_layers, bidirectional, batch_first, dropout)
        shapes = doping.pop("kron_shape", None)
        # a list of num_layers shapes is per layer, unless it is itself one shape ([[M1, N1], [M2, N2]], e.g. JSON)
        if not (isinstance(shapes, list) and len(shapes) == num_layers and not _is_one_kron_shape(shapes)):
            shapes = [shapes] * num_layers
        H, D = self.hidden_size, self.num_directions
        self.cells = nn.ModuleList(
            DopedLinear((input_size if k == 0 else D * H) + H, 4 * H, kron_shape=shapes[k], **doping)
            for k in range(num_layers)
            for _ in range(D)
        )

    @classmethod
    def from_cells(
        cls,
        cells: list[DopedLinear],
        input_size: int,
        hidden_size: int,
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
    ) -> DopedLSTM:
        """A DopedLSTM around existing gate layers (cells[k*D + d]: 4H x (I_k + H)), e.g. from `compress`."""
        H, D = int(hidden_size), 2 if bidirectional else 1
        if not cells or len(cells) % D:
            raise ValueError(f"need a positive multiple of {D} cells, got {len(cells)}")
        for j, cell in enumerate(cells):
            k = j // D
            want = (4 * H, (input_size if k == 0 else D * H) + H)
            if (cell.out_features, cell.in_features) != want:
                raise ValueError(f"cell {j}: gate matrix {cell.out_features} x {cell.in_features}, expected {want}")
        lstm = cls.__new__(cls)
        nn.Module.__init__(lstm)
        lstm._set_config(input_size, H, len(cells) // D, bidirectional, batch_first, dropout)
        lstm.cells = nn.ModuleList(cells)
        return lstm

    def _zeros(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def forward(self, input: torch.Tensor, hx: State | None = None) -> tuple[torch.Tensor, State]:
        unbatched = input.dim() == 2
        if input.dim() not in (2, 3):
            raise ValueError(f"DopedLSTM expects a 2-D or 3-D input, got shape {tuple(input.shape)}")
        if unbatched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[-1] != self.input_size:
            raise ValueError(f"DopedLSTM expects {self.input_size} input features, got {input.shape[-1]}")
        batch = input.shape[1]
        if hx is None:
            h0 = c0 = self._zeros(batch, input)
        else:
            h0, c0 = hx
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        layer_input = input
        h_n, c_n = [], []
        D = self.num_directions
        for k in range(self.num_layers):
            outs = []
            for d in range(D):
                j = k * D + d
                seq = layer_input.flip(0) if d else layer_input
                out, h, c = _run_direction(self.cells[j], seq, h0[j], c0[j])
                outs.append(out.flip(0) if d else out)
                h_n.append(h)
                c_n.append(c)
            layer_input = outs[0] if D == 1 else torch.cat(outs, dim=-1)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        output, hn, cn = layer_input, torch.stack(h_n), torch.stack(c_n)
        if unbatched:
            return output.squeeze(1), (hn.squeeze(1), cn.squeeze(1))
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (hn, cn)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout:g}"
        return s


__all__ = ["DopedLSTM", "lstm_gate_weights"]
