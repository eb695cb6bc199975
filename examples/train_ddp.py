"""Train a doped LSTM LM with the doping recipe under torch.distributed (DDP), one checkpoint written by rank 0.

    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py --tiny --out /tmp/ddp      # CPU, gloo
    torchrun --standalone --nproc_per_node=8 examples/train_ddp.py --cmr 0.7 --out runs/ddp   # GPUs, NCCL

The global batch (``--batch``, streams of the corpus) is split evenly over the ranks; DDP averages the gradients,
so with CMR 0 and dropout 0 the result equals one process training the whole batch. Pruning masks: the schedule
depends on the step only, and `DopingSchedule.step` broadcasts masks from rank 0 after each change. CMR (and
dropout) masks are drawn per rank (`seed_per_rank`: seed + rank). Run without torchrun it is one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "accuracy"))

from data import load_corpus  # noqa: E402
from lm_training import LMLoss, batchify, epochs, perplexity  # noqa: E402

import dkp_deploy  # noqa: E402
from dkp_deploy.nn import DopedLSTMLM, doped_layers  # noqa: E402
from dkp_deploy.train import DopingSchedule, is_main_process, seed_per_rank, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt (written by rank 0)")
    p.add_argument("--tiny", action="store_true", help="tiny model, a few steps (seconds)")
    p.add_argument("--cmr", type=float, default=0.0, help="initial CMR drop rate (linDec), default 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="training steps (default 1000; tiny 6)")
    p.add_argument("--batch", type=int, help="global batch (default 20; tiny 4), divisible by the world size")
    p.add_argument("--hidden", type=int, help="LSTM size (default 240; tiny 16)")
    p.add_argument("--dropout", type=float, help="dropout (default 0.5; tiny 0, so runs are comparable)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    args = p.parse_args(argv)
    steps = args.steps or (6 if args.tiny else 1000)
    batch = args.batch or (4 if args.tiny else 20)
    hidden = args.hidden or (16 if args.tiny else 240)
    dropout = args.dropout if args.dropout is not None else (0.0 if args.tiny else 0.5)
    bptt = 8 if args.tiny else 35

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    device = torch.device("cpu")
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if batch % world:
        raise SystemExit(f"--batch {batch} is not divisible by the world size {world}")
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)  # the same initial model on every rank (DDP also broadcasts rank 0's)
    corpus = load_corpus()
    data = batchify(corpus.train, batch)[:, rank * (batch // world) : (rank + 1) * (batch // world)].to(device)
    model = DopedLSTMLM(corpus.vocab_size, hidden, hidden, 2, dropout=dropout, density=1.0).to(device)
    M, N = 4 * hidden, 2 * hidden
    structured = doped_layers(model)[0].structured_params
    final_density = max(0.01, (M * N / (4.0 if args.tiny else 20.0) - structured) / (M * N))
    schedule = DopingSchedule(final_density=final_density, start_step=round(0.2 * steps),
                              end_step=round(0.9 * steps), frequency=1 if args.tiny else 10, cmr=args.cmr)
    seed_per_rank(args.seed)  # CMR / dropout masks differ per rank
    net: torch.nn.Module = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    losses = train(net, epochs(data, bptt, steps), LMLoss(), optimizer, schedule=schedule, steps=steps,
                   max_grad_norm=5.0, progress=False)
    if is_main_process():
        args.out.mkdir(parents=True, exist_ok=True)
        model.eval()
        dkp_deploy.save(model.cpu(), args.out / "model.pt")
        valid = batchify(corpus.valid[: 300 if args.tiny else None], 10)
        summary = {"world_size": world, "steps": steps, "global_batch": batch, "cmr": args.cmr,
                   "final_density": final_density, "train_loss_last": losses[-1],
                   "valid_ppl": perplexity(model, valid, bptt)}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
