"""Dope a trained dense LSTM LM after the fact: dense -> `dkp_deploy.compress` -> short CMR fine-tune -> deploy.

    python examples/compress_pretrained.py --out artifacts/compressed          # ~2-3 minutes on 2 cores
    python examples/compress_pretrained.py --out /tmp/cp --dense my_lm.pt     # start from your own weights
    python examples/compress_pretrained.py --out /tmp/cp --tiny               # smoke setting (seconds)

1. a dense LM (torch `nn.Embedding` -> `nn.LSTM` -> `nn.Linear`): trained here on the pydoc_data.topics corpus,
   or loaded from ``--dense`` (a state_dict of `DenseLM` saved with torch.save; read with weights_only=True).
2. `dkp_deploy.compress(lstm, cf=20)`: per gate matrix the nearest Kronecker product (Van Loan-Pitsianis)
   plus the largest entries of the residual as W_s, at 20x. Perplexity right after compression shows the damage.
3. fine-tune with CMR (drop rate 0.7, linDec to zero; W_s keeps its sparsity), which recovers most of it.
4. save, convert to ONNX (custom op, step graph) and TFLite, validate both, print the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quickstart as qs  # noqa: E402  (the shared steps: data, training recipe, export, validation)


class DenseLM(nn.Module):
    """A plain dense word-level LSTM LM, the kind of model a user already has."""

    def __init__(self, vocab: int, hidden: int, layers: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor, state=None):
        out, state = self.lstm(self.drop(self.embedding(tokens)), state)
        return self.decoder(self.drop(out)), state


def train_dense(corpus: qs.Corpus, s: qs.Setting, steps: int, progress: bool) -> DenseLM:
    from lm_training import LMLoss, batchify, epochs

    from dkp_deploy.train import train

    torch.manual_seed(s.seed)
    model = DenseLM(corpus.vocab_size, s.hidden, dropout=s.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    train(model, epochs(batchify(corpus.train, s.batch), s.bptt, steps), LMLoss(), optimizer, steps=steps,
          max_grad_norm=5.0, progress=progress, desc="dense")
    return model.eval()


def doped_lm(dense: DenseLM, cf: float):
    """A DopedLSTMLM holding `dense`'s embedding and decoder and its LSTM doped by `dkp_deploy.compress`."""
    import dkp_deploy
    from dkp_deploy.nn import DopedLSTMLM

    lstm = dkp_deploy.compress(dense.lstm, cf=cf)
    H = dense.lstm.hidden_size
    lm = DopedLSTMLM(dense.embedding.num_embeddings, dense.embedding.embedding_dim, H, dense.lstm.num_layers,
                     dropout=dense.drop.p, structure="none", density=0.0)  # placeholder LSTM, replaced below
    lm.lstm = lstm
    lm.embedding.load_state_dict(dense.embedding.state_dict())
    lm.decoder.load_state_dict(dense.decoder.state_dict())
    return lm.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compress a dense LSTM LM with dkp_deploy.compress, fine-tune, deploy.")
    p.add_argument("--out", type=Path, required=True, help="folder for the artifacts (created)")
    p.add_argument("--dense", type=Path, help="a DenseLM state_dict (torch.save); default: train one here")
    p.add_argument("--cf", type=float, help="compression factor of the LSTM weights (default 20)")
    p.add_argument("--tiny", action="store_true", help="smoke setting: tiny model, a few steps (seconds)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    import dkp_deploy

    torch.set_num_threads(args.threads)
    s = qs.TINY if args.tiny else replace(qs.Setting(), steps=200, lr=1e-3)  # fine-tuning: fewer, smaller steps
    if args.cf:
        s = replace(s, cf=args.cf)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = qs.load_corpus()
    progress = not args.quiet
    if args.dense:
        dense = DenseLM(corpus.vocab_size, s.hidden, dropout=s.dropout)
        dense.load_state_dict(torch.load(args.dense, weights_only=True))
        dense.eval()
    else:
        dense = train_dense(corpus, replace(s, lr=3e-3), steps=3 * s.steps, progress=progress)
        torch.save(dense.state_dict(), args.out / "dense.pt")
    ppl = {"dense": qs.test_perplexity(dense, corpus, s)}
    model = doped_lm(dense, s.cf)
    ppl["compressed"] = qs.test_perplexity(model, corpus, s)
    t0 = time.perf_counter()
    model = qs.train_lm(corpus, s, model=model, progress=progress, desc="CMR fine-tune")
    tune_s = time.perf_counter() - t0
    ppl["fine_tuned"] = qs.test_perplexity(model, corpus, s)
    files = {"checkpoint": args.out / "model.pt"}
    dkp_deploy.save(model, files["checkpoint"])
    files.update(qs.export(files["checkpoint"], args.out))
    summary = qs.summarize(model, corpus, s, files, tune_s)
    summary["perplexity"] = ppl
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"perplexity   dense {ppl['dense']:.1f} -> compressed {ppl['compressed']:.1f} -> "
          f"after {s.steps} CMR fine-tuning steps {ppl['fine_tuned']:.1f}")
    print(qs.report(summary).replace("s of training", "s of fine-tuning"))
    print(f"settings     {json.dumps(asdict(s))}")
    if not all(v["passed"] for v in summary["parity"].values()):
        for table in summary["parity_tables"].values():
            print(table, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
