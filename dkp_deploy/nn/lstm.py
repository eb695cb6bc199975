"""`DopedLSTM`: an LSTM whose per-layer gate matrix 4H x (I+H) is one `DopedLinear` on [x_t, h_{t-1}]."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from .linear import DopedLinear

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


class DopedLSTM(nn.Module):
    """Drop-in for `torch.nn.LSTM` (unidirectional, no projections) with doped gate matrices.

    Layer k computes gates = W_k [x_t, h_{t-1}] + b_k with W_k a `DopedLinear` of shape 4H x (I_k + H)
    (the paper's sizing: 2600 x 1300 for H = 650) and torch's gate order (i, f, g, o); its single bias plays the
    role of torch's b_ih + b_hh. Call and return contract as torch.nn.LSTM: ``lstm(x, (h0, c0)=None)`` ->
    ``(output, (h_n, c_n))``, x ``[T, B, I]`` (``[B, T, I]`` if batch_first, or unbatched ``[T, I]``), states
    ``[num_layers, B, H]``. ``dropout`` applies to every layer's output but the last, in training, as torch does.

    ``**doping`` goes to every layer's DopedLinear (structure, kron_shape, rank, hmd_rows, density, cmr, bias,
    device, dtype); ``kron_shape`` may also be a list with one shape per layer (layer 0 is 4H x (I+H), the
    others 4H x 2H).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        batch_first: bool = False,
        dropout: float = 0.0,
        **doping: Any,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.batch_first, self.dropout = bool(batch_first), float(dropout)
        shapes = doping.pop("kron_shape", None)
        # a list of num_layers shapes is per layer, unless it is itself one shape ([[M1, N1], [M2, N2]], e.g. JSON)
        if not (isinstance(shapes, list) and len(shapes) == num_layers and not _is_one_kron_shape(shapes)):
            shapes = [shapes] * num_layers
        H = self.hidden_size
        self.cells = nn.ModuleList(
            DopedLinear((input_size if k == 0 else H) + H, 4 * H, kron_shape=shapes[k], **doping)
            for k in range(num_layers)
        )

    @classmethod
    def from_cells(
        cls,
        cells: list[DopedLinear],
        input_size: int,
        hidden_size: int,
        *,
        batch_first: bool = False,
        dropout: float = 0.0,
    ) -> DopedLSTM:
        """A DopedLSTM around existing gate layers (cells[k]: 4H x (I_k + H)), e.g. from `compress` or a spec."""
        H = int(hidden_size)
        for k, cell in enumerate(cells):
            want = (4 * H, (input_size if k == 0 else H) + H)
            if (cell.out_features, cell.in_features) != want:
                raise ValueError(f"layer {k}: gate matrix {cell.out_features} x {cell.in_features}, expected {want}")
        lstm = cls.__new__(cls)
        nn.Module.__init__(lstm)
        lstm.input_size, lstm.hidden_size, lstm.num_layers = int(input_size), H, len(cells)
        lstm.batch_first, lstm.dropout = bool(batch_first), float(dropout)
        lstm.cells = nn.ModuleList(cells)
        return lstm

    def _zeros(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.num_layers, batch, self.hidden_size, dtype=like.dtype, device=like.device)

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
        for k, cell in enumerate(self.cells):
            h, c = h0[k], c0[k]
            outputs = []
            # W_s [x_t; h] = W_s[:, :I] x_t + W_s[:, I:] h: mask once per sequence, input columns for all steps in
            # one matmul; the structured path mixes x and h columns, so it runs per step (it is small)
            w_s = cell.sparse_weight()
            n_in = layer_input.shape[-1]
            ys_input = F.linear(layer_input, w_s[:, :n_in])
            w_sh = w_s[:, n_in:]
            for t, x_t in enumerate(layer_input.unbind(0)):
                y_s = torch.addmm(ys_input[t], h, w_sh.t())
                gates = cell.combine(cell.structured_forward(torch.cat([x_t, h], dim=-1)), y_s)
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            layer_input = torch.stack(outputs) if outputs else layer_input.new_zeros(0, batch, self.hidden_size)
            h_n.append(h)
            c_n.append(c)
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
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout:g}"
        return s


__all__ = ["DopedLSTM", "lstm_gate_weights"]
