"""`DopedLSTMLM`: the paper's word-level language model (Zaremba et al. 2014 with doped LSTM layers)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .lstm import DopedLSTM, State


class DopedLSTMLM(nn.Module):
    """Embedding -> dropout -> DopedLSTM -> dropout -> dense decoder (only the LSTM is doped, as in the paper).

    ``forward(tokens, state=None) -> (logits, (h_n, c_n))``: tokens are int64 ids ``[T, B]`` (``[B, T]`` if
    ``batch_first``), logits ``[T, B, V]`` (``[B, T, V]``), states ``[num_layers, B, H]`` -- the layouts of
    `dkp_deploy.signature` for arch "lstm_lm". ``tie_weights`` shares the decoder weight with the embedding
    (needs embed_size == hidden_size). ``**doping`` goes to the DopedLSTM's layers.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        tie_weights: bool = False,
        dropout: float = 0.0,
        batch_first: bool = False,
        **doping: Any,
    ) -> None:
        super().__init__()
        if tie_weights and embed_size != hidden_size:
            raise ValueError(f"tie_weights needs embed_size == hidden_size, got {embed_size} and {hidden_size}")
        self.vocab_size, self.embed_size, self.hidden_size = int(vocab_size), int(embed_size), int(hidden_size)
        self.num_layers, self.tie_weights, self.dropout = int(num_layers), bool(tie_weights), float(dropout)
        self.batch_first = bool(batch_first)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.drop = nn.Dropout(dropout)
        self.lstm = DopedLSTM(embed_size, hidden_size, num_layers, batch_first=batch_first, dropout=dropout, **doping)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        with torch.no_grad():  # the word_language_model / Zaremba initialisation for the non-doped parts
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
            self.decoder.bias.zero_()
        if tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        out, state = self.lstm(self.drop(self.embedding(tokens)), state)
        return self.decoder(self.drop(out)), state

    def init_state(self, batch: int) -> State:
        """Zero (h0, c0) of shape [num_layers, batch, H] on the model's device and dtype."""
        w = self.decoder.weight
        z = torch.zeros(self.num_layers, batch, self.hidden_size, dtype=w.dtype, device=w.device)
        return z, z.clone()


__all__ = ["DopedLSTMLM"]
