"""The size and layout settings every doped recurrent module shares (DopedLSTM, DopedGRU, DopedRNN)."""

from __future__ import annotations


class RecurrentConfig:
    """input_size, hidden_size, num_layers, bidirectional, batch_first and dropout, checked as torch checks them."""

    def _set_config(
        self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, batch_first: bool, dropout: float
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bidirectional, self.batch_first, self.dropout = bool(bidirectional), bool(batch_first), float(dropout)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1
