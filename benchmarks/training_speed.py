"""Training-step time of DopedLSTM against torch.nn.LSTM of the same size (forward + backward, one thread).

    .venv/bin/python benchmarks/training_speed.py                 # 2 x 650, batch 20, T 35 (the paper's medium LM)
    .venv/bin/python benchmarks/training_speed.py --hidden 256    # smaller, quicker

Both see the same input ``[T, batch, H]`` and a sum-of-outputs loss; the doped model has dense W_s (density 1,
the start of training, its slowest point) and at 5 % density. The profiler check lists every aten op whose
output has the M x N gate-matrix size: `DopedLinear` forms ``W_s * mask`` (M x N, the dense co-matrix W_s the
layer holds anyway), never ``kron(B, C)`` (no aten::kron, no M x N output from the structured path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from dkp_deploy.nn import DopedLinear, DopedLSTM


def step_time(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward."""
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        y, _ = model(x)
        y.sum().backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=650)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    H = args.hidden
    x = torch.randn(args.bptt, args.batch, H)
    dense = torch.nn.LSTM(H, H, 2)
    doped = DopedLSTM(H, H, num_layers=2)
    t_dense = step_time(dense, x, args.repeats)
    t_doped = step_time(doped, x, args.repeats)
    for la in doped.modules():
        if isinstance(la, DopedLinear):
            la.set_density(0.05)
    t_sparse = step_time(doped, x, args.repeats)
    la = next(m for m in doped.modules() if isinstance(m, DopedLinear))
    big = la.out_features * la.in_features
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y, _ = doped(x)
        y.sum().backward()
    ops = {e.key for e in prof.key_averages(group_by_input_shape=True)}
    mn_ops = sorted({e.key for e in prof.key_averages(group_by_input_shape=True)
                     if any(s and torch.Size(s).numel() == big for s in e.input_shapes)})
    result = {
        "hidden": H, "batch": args.batch, "bptt": args.bptt, "threads": args.threads,
        "nn_lstm_ms": 1e3 * t_dense, "doped_dense_ws_ms": 1e3 * t_doped, "doped_5pct_ws_ms": 1e3 * t_sparse,
        "ratio_dense_ws": t_doped / t_dense, "ratio_5pct_ws": t_sparse / t_dense,
        "kron_in_profile": "aten::kron" in ops, "ops_with_MxN_inputs": mn_ops,
        "kron_shape": la.kron_shape,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
