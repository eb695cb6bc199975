"""Quickstart: train a doped LSTM language model, deploy it to ONNX and TFLite, prove parity, generate text.

    python examples/quickstart.py --out artifacts/quickstart      # what `make demo` runs (a few minutes, 2 cores)
    python examples/quickstart.py --out /tmp/qs --tiny             # smoke setting (seconds)

Steps (each prints what it did):

1. data: word-level English text that ships with CPython (`pydoc_data.topics`, see benchmarks/accuracy/data.py).
2. train a 2-layer LSTM LM whose gate matrices are kron(B, C) + W_s at 20x compression, with the paper's recipe:
   W_s starts dense and is gradually magnitude-pruned (cubic schedule) while co-matrix regularisation (CMR,
   drop rate 0.7) decreases linearly to zero (linDec); then a few steps at the final sparsity.
3. `dkp_deploy.save` -> model.pt; `dkp_deploy.converters.to_onnx` (custom op `ai.dkp::SparseMatVec`, one time
   step per call, plus a dense-W step graph as the speed baseline) and `to_tflite` (step mode).
4. `dkp_deploy.validate` each file against the checkpoint (float64 reference).
5. generate a few lines with the ONNX step graph in onnxruntime (sampling, seeded).
6. print sizes, compression factor, parity errors and ONNX speed (doped vs dense step, medians); write
   summary.json next to the artifacts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "accuracy"))

from data import Corpus, load_corpus  # noqa: E402


@dataclass(frozen=True)
class Setting:
    hidden: int = 128
    cf: float = 20.0
    steps: int = 1000
    batch: int = 20
    bptt: int = 35
    lr: float = 3e-3
    dropout: float = 0.3
    cmr: float = 0.7
    prune_start: float = 0.2
    prune_end: float = 0.7
    prune_every: int = 10
    gen_tokens: int = 60
    speed_rounds: int = 5
    eval_tokens: int | None = None
    seed: int = 0


TINY = Setting(hidden=16, cf=4.0, steps=6, batch=4, bptt=8, prune_every=1, gen_tokens=12, speed_rounds=2,
               eval_tokens=200)
PROMPT = "the assert statement"


def ws_density_for(hidden: int, cf: float) -> tuple[Any, float]:
    """The Kronecker shape (the section-3.1 rule) of a 4H x 2H gate matrix and the W_s density giving `cf`."""
    from dkp_deploy.kron_shape import choose_kron_shape, kron_params

    M, N = 4 * hidden, 2 * hidden
    shape = choose_kron_shape(M, N)
    density = (M * N / cf - kron_params(shape)) / (M * N)
    if density <= 0:
        raise SystemExit(f"kron {shape} alone stores more than 1/{cf:g} of a {M} x {N} matrix: lower --cf")
    return shape, density


def train_lm(corpus: Corpus, s: Setting, *, model: Any = None, progress: bool = True, desc: str = "train") -> Any:
    """Train (or fine-tune) a doped DopedLSTMLM with the pruning + CMR linDec recipe; returns it in eval mode."""
    import torch
    from lm_training import LMLoss, batchify, epochs

    from dkp_deploy.nn import DopedLSTMLM
    from dkp_deploy.train import DopingSchedule, train

    torch.manual_seed(s.seed)
    shape, density = ws_density_for(s.hidden, s.cf)
    initial = 1.0
    if model is None:
        model = DopedLSTMLM(corpus.vocab_size, s.hidden, s.hidden, 2, dropout=s.dropout, kron_shape=shape)
    else:  # fine-tuning a compressed model: W_s already has its final density, anneal CMR only
        initial = density = min(la.density for la in _layers(model))
    schedule = DopingSchedule(
        final_density=density,
        initial_density=initial,
        start_step=round(s.prune_start * s.steps),
        end_step=max(round(s.prune_end * s.steps), round(s.prune_start * s.steps) + 1),
        frequency=s.prune_every,
        cmr=s.cmr,
        cmr_schedule="linDec",
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    batches = epochs(batchify(corpus.train, s.batch), s.bptt, s.steps)
    train(model, batches, LMLoss(), optimizer, schedule=schedule, steps=s.steps, max_grad_norm=5.0,
          progress=progress, desc=desc)
    return model.eval()


def _layers(model: Any) -> list[Any]:
    from dkp_deploy.nn import doped_layers

    return doped_layers(model)


def test_perplexity(model: Any, corpus: Corpus, s: Setting) -> float:
    from lm_training import batchify, perplexity

    return perplexity(model, batchify(corpus.test[: s.eval_tokens], 10), s.bptt)


def export(checkpoint: Path, out: Path, *, quiet: bool = True) -> dict[str, Path]:
    """ONNX step graphs (doped with the custom op; dense W as the baseline) and the TFLite step model."""
    from dkp_deploy.converters import to_onnx, to_tflite

    files = {
        "onnx": out / "model.step.onnx",
        "onnx_dense": out / "model.step.dense.onnx",
        "tflite": out / "model.step.tflite",
    }
    to_onnx(checkpoint, files["onnx"], mode="step", sparse_impl="custom", quiet=quiet)
    to_onnx(checkpoint, files["onnx_dense"], mode="step", sparse_impl="dense", quiet=quiet)
    to_tflite(checkpoint, files["tflite"], mode="step", quiet=quiet)
    return files


def parity(checkpoint: Path, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """`dkp_deploy.validate` of each exported file: passed, worst per-layer and end-to-end error."""
    from dkp_deploy.validate import validate

    out = {}
    for name in ("onnx", "tflite"):
        report = validate(checkpoint, files[name])
        layer = [r.error for r in report.rows if r.kind == "layer"]
        e2e = [r.error for r in report.rows if r.kind == "e2e"]
        out[name] = {"passed": report.passed, "max_layer_error": max(layer, default=math.nan),
                     "max_e2e_error": max(e2e, default=math.nan), "table": report.table()}
    return out


def generate(onnx_path: Path, corpus: Corpus, *, prompt: str, tokens: int, seed: int = 0,
             temperature: float = 0.8) -> str:
    """Sample `tokens` words after `prompt` with the ONNX step graph in onnxruntime (state carried by hand)."""
    from dkp_deploy import runtime
    from dkp_deploy.spec import ModelSpec  # noqa: F401  (the step graph's layouts: dkp_deploy.signature)

    sess = runtime.session(onnx_path)
    h_shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[1].shape]
    h = np.zeros(h_shape, np.float32)
    c = np.zeros_like(h)
    rng = np.random.default_rng(seed)
    ids = corpus.ids(prompt)
    logits = None
    for t in ids:
        logits, h, c = sess.run(["y_t", "h_next", "c_next"], {"x_t": np.array([t], np.int64), "h": h, "c": c})
    out = list(ids)
    for _ in range(tokens):
        z = logits[0].astype(np.float64) / temperature
        z[0] = -np.inf  # never sample <unk>
        p = np.exp(z - z.max())
        nxt = int(rng.choice(len(p), p=p / p.sum()))
        out.append(nxt)
        logits, h, c = sess.run(["y_t", "h_next", "c_next"], {"x_t": np.array([nxt], np.int64), "h": h, "c": c})
    return corpus.text(out)


def speed(files: dict[str, Path], rounds: int) -> dict[str, float]:
    """Median seconds per batch-1 time step: ONNX doped (custom op) vs ONNX dense W, and TFLite doped."""
    from dkp_deploy import signature
    from dkp_deploy.bench.measure import Budget, compare, ort_runner, ort_session, tflite_runner
    from dkp_deploy.checkpoint import load_spec

    spec = load_spec(files["checkpoint"])
    feeds = signature.random_feeds(spec, "step", batch=1, seed=0)
    fns = {
        "onnx_doped": ort_runner(ort_session(files["onnx"]), feeds),
        "onnx_dense": ort_runner(ort_session(files["onnx_dense"]), feeds),
        "tflite_doped": tflite_runner(files["tflite"], feeds),
    }
    timing = compare(fns, Budget(rounds=rounds, repeats=50, warmup=5))
    return {k: t.seconds for k, t in timing.items()}


def report(summary: dict[str, Any]) -> str:
    """The human-readable summary the example prints."""
    z, sz, par, sp = summary, summary["sizes_bytes"], summary["parity"], summary["speed_s"]
    kb = {k: f"{v / 1024:.0f} KiB" for k, v in sz.items()}
    lines = [
        f"model        2 x {z['setting']['hidden']} doped LSTM LM, vocab {z['vocab']}; "
        f"LSTM weights {z['lstm_weights']:,} -> {z['lstm_stored']:,} stored (CF {z['lstm_cf']:.2f}x, "
        f"W_s density {z['ws_density']:.2%}, kron {z['kron_shape']})",
        f"accuracy     test perplexity {z['test_ppl']:.1f} ({z['train_s']:.0f} s of training)",
        f"sizes        checkpoint {kb['checkpoint']}, ONNX doped {kb['onnx']}, ONNX dense {kb['onnx_dense']}, "
        f"TFLite {kb['tflite']}; the LSTM weights alone: dense {z['lstm_bytes']['dense'] / 1024:.0f} KiB -> "
        f"doped {z['lstm_bytes']['doped'] / 1024:.0f} KiB (B, C and CSR W_s; the rest is embedding + decoder)",
    ]
    for name in ("onnx", "tflite"):
        p = par[name]
        lines.append(f"parity       {name:6s} {'PASSED' if p['passed'] else 'FAILED'}: max layer error "
                     f"{p['max_layer_error']:.2g}, max end-to-end error {p['max_e2e_error']:.2g}")
    lines.append(
        f"speed        one step, batch 1, 1 thread (median): ONNX doped {sp['onnx_doped'] * 1e6:.0f} us, "
        f"ONNX dense {sp['onnx_dense'] * 1e6:.0f} us ({sp['onnx_dense'] / sp['onnx_doped']:.2f}x), "
        f"TFLite doped {sp['tflite_doped'] * 1e6:.0f} us")
    lines.append("generated    (ONNX step graph, onnxruntime, seed 0):")
    lines += ["  " + line for line in z["generated"].splitlines()]
    return "\n".join(lines)


def summarize(model: Any, corpus: Corpus, s: Setting, files: dict[str, Path], train_s: float) -> dict[str, Any]:
    """Everything the example measured, for the printout and summary.json."""
    layers = _layers(model)
    weights = sum(la.out_features * la.in_features for la in layers)
    stored = sum(la.structured_params + la.nnz for la in layers)
    par = parity(files["checkpoint"], files)
    return {
        "setting": asdict(s),
        "vocab": corpus.vocab_size,
        "kron_shape": layers[0].kron_shape,
        "lstm_weights": weights,
        "lstm_stored": stored,
        "lstm_cf": weights / stored,
        # float32 values, int32 CSR column indices and row pointers
        "lstm_bytes": {"dense": 4 * weights,
                       "doped": sum(4 * (la.structured_params + 2 * la.nnz + la.out_features + 1) for la in layers)},
        "ws_density": sum(la.nnz for la in layers) / weights,
        "test_ppl": test_perplexity(model, corpus, s),
        "train_s": train_s,
        "sizes_bytes": {k: p.stat().st_size for k, p in files.items()},
        "parity": {k: {kk: vv for kk, vv in v.items() if kk != "table"} for k, v in par.items()},
        "parity_tables": {k: v["table"] for k, v in par.items()},
        "speed_s": speed(files, s.speed_rounds),
        "generated": generate(files["onnx"], corpus, prompt=PROMPT, tokens=s.gen_tokens, seed=s.seed),
        "files": {k: str(p) for k, p in files.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train, save, convert, validate and run a small doped LSTM LM.")
    p.add_argument("--out", type=Path, required=True, help="folder for the artifacts (created)")
    p.add_argument("--tiny", action="store_true", help="smoke setting: tiny model, a few steps (seconds)")
    p.add_argument("--steps", type=int, help=f"training steps (default {Setting.steps})")
    p.add_argument("--cmr", type=float, help=f"initial CMR drop rate, annealed by linDec (default {Setting.cmr})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (default 1: more only pays on an otherwise idle machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    import torch

    import dkp_deploy

    torch.set_num_threads(args.threads)
    s = TINY if args.tiny else Setting()
    if args.steps:
        s = Setting(**{**asdict(s), "steps": args.steps})
    if args.cmr is not None:
        s = Setting(**{**asdict(s), "cmr": args.cmr})
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus()
    print(f"data         {corpus.source}: {len(corpus.train):,} / {len(corpus.valid):,} / {len(corpus.test):,} "
          f"train/valid/test tokens, vocabulary {corpus.vocab_size:,}")
    t0 = time.perf_counter()
    model = train_lm(corpus, s, progress=not args.quiet)
    train_s = time.perf_counter() - t0
    files = {"checkpoint": args.out / "model.pt"}
    dkp_deploy.save(model, files["checkpoint"])
    files.update(export(files["checkpoint"], args.out))
    summary = summarize(model, corpus, s, files, train_s)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(report(summary))
    print(f"artifacts    {', '.join(sorted(p.name for p in files.values()))}, summary.json in {args.out}")
    if not all(v["passed"] for v in summary["parity"].values()):
        for table in summary["parity_tables"].values():
            print(table, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
