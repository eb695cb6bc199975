"""Session-wide test settings."""

import os

# Tiny tensors: thread hand-off costs more than it saves, and CI has 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch
except ImportError:  # the deploy side is tested without torch too
    torch = None

if torch is not None:
    torch.set_num_threads(1)
