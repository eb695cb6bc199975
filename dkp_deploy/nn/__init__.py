"""PyTorch layers for doped structured matrices (needs torch) and their bridge to the model spec.

`DopedLinear` (structures kron, lmf, hmd, none), `DopedEmbedding` (a kron + W_s table), `DopedLSTM`, `DopedGRU`,
`DopedRNN`, `DopedLSTMLM`, `DopedMLP`; `to_spec` / `from_spec` convert between these modules and
`dkp_deploy.spec.ModelSpec`. Training recipe: `dkp_deploy.train`; post-training doping of dense models:
`dkp_deploy.compress` (module `dkp_deploy.compression`).
"""

from .embedding import DopedEmbedding
from .gru import DopedGRU
from .linear import STRUCTURES, DopedLinear, doped_layers
from .lm import DopedLSTMLM
from .lstm import DopedLSTM
from .mlp import ACTIVATION_MODULES, DopedMLP, activation_kind, activation_module
from .rnn import DopedRNN
from .spec_bridge import doped_linear_from_matrix, doped_matrix, from_spec, to_spec

__all__ = [
    "DopedLinear",
    "DopedEmbedding",
    "DopedLSTM",
    "DopedGRU",
    "DopedRNN",
    "DopedLSTMLM",
    "DopedMLP",
    "STRUCTURES",
    "ACTIVATION_MODULES",
    "activation_kind",
    "activation_module",
    "doped_layers",
    "doped_linear_from_matrix",
    "doped_matrix",
    "from_spec",
    "to_spec",
]
