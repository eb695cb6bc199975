"""Bring your own model: a plain torch LM -> `dkp_deploy.compress` -> CMR fine-tune -> `dkp_deploy.export` -> run.

    python examples/compress_pretrained.py --out artifacts/demo               # what `make demo` runs (~3 min)
    python examples/compress_pretrained.py --out /tmp/cp --dense my_lm.pt     # start from your own weights
    python examples/compress_pretrained.py --out /tmp/cp --tiny               # smoke setting (seconds)

The model is not one of dkp-deploy's classes: pytorch/examples' word_language_model shape (`nn.Embedding` ->
`nn.Dropout` -> `nn.LSTM` -> `nn.Dropout` -> `nn.Linear`, forward ``(tokens, hidden)``).

1. the dense LM: trained here on the pydoc_data.topics corpus, or loaded from ``--dense`` (a `WordLM` state_dict
   saved with torch.save; read with weights_only=True).
2. `dkp_deploy.compress(model, cf=20, include=["lstm"])`: the LSTM's gate matrices become kron(B, C) + W_s
   (nearest Kronecker product, the largest residual entries as W_s) inside the user's own module; the report says
   what was doped. Perplexity right after compression shows the damage.
3. fine-tune with the recipe (`dkp_deploy.train`: CMR drop rate 0.7, linDec to zero; W_s keeps its sparsity).
4. `dkp_deploy.export` (torch.onnx conventions): the hub (`model.hub.onnx`, lowered later by `dkp-convert`
   without torch), a one-step graph with the custom op (`model.step.onnx`), its dense-W baseline, and the
   sequence graph (any T and batch).
5. `dkp_deploy.validate.validate_export` of each file against the torch model in float64 (and the hub).
6. int8: the doped sequence graph stored in int8 (`quantize="int8"`, checked against its weights dequantized; and
   `quantize="int8-dynamic"`, its doped matrices' inputs quantized at run time too)
   and onnxruntime's `quantize_dynamic` of the dense model, the int8 a user tries first: test perplexity of
   each ONNX file in onnxruntime (fp32 doped, int8 doped, int8 dense, fp32 dense) and their sizes.
7. generate text with the step graph in onnxruntime; time doped vs dense; write summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quickstart as qs  # noqa: E402  (the shared steps: data, training recipe)


class WordLM(nn.Module):
    """pytorch/examples' word_language_model RNNModel (LSTM), the kind of model a user already has."""

    def __init__(self, vocab: int, hidden: int, layers: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(hidden, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor, hidden=None):
        out, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(out)), hidden


def train_dense(corpus: qs.Corpus, s: qs.Setting, steps: int, progress: bool) -> WordLM:
    from lm_training import LMLoss, batchify, epochs

    from dkp_deploy.train import train

    torch.manual_seed(s.seed)
    model = WordLM(corpus.vocab_size, s.hidden, dropout=s.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    train(model, epochs(batchify(corpus.train, s.batch), s.bptt, steps), LMLoss(), optimizer, steps=steps,
          max_grad_norm=5.0, progress=progress, desc="dense")
    return model.eval()


STEP_IO = {"input_names": ["x_t", "h", "c"], "output_names": ["y_t", "h_next", "c_next"]}


def _sequence_io(model: WordLM) -> tuple[tuple, tuple]:
    """Example inputs and dynamic shapes of the sequence graph ([T, batch] tokens and the state)."""
    L, H = model.rnn.num_layers, model.rnn.hidden_size
    batch, time_ = torch.export.Dim("batch"), torch.export.Dim("time")
    seq_args = (torch.zeros(8, 2, dtype=torch.int64), (torch.zeros(L, 2, H), torch.zeros(L, 2, H)))
    return seq_args, ({0: time_, 1: batch}, ({1: batch}, {1: batch}))


def int8_dynamic(src: Path, dst: Path) -> Path:
    """onnxruntime's int8 dynamic quantization (QInt8 weights) of `src`, its advice on the root logger silenced."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst


def dense_int8_files(model: WordLM, out: Path) -> dict[str, Path]:
    """The dense model's sequence graph and onnxruntime's int8 dynamic quantization of it."""
    from dkp_deploy.export import export

    seq_args, seq_dims = _sequence_io(model)
    dense = export(model, seq_args, out / "model.dense.onnx", dynamic_shapes=seq_dims)
    return {"dense": dense, "dense_int8": int8_dynamic(dense, out / "model.dense.int8.onnx")}


def onnx_perplexity(path: Path, corpus: qs.Corpus, s: qs.Setting) -> float:
    """Test perplexity of a sequence graph in onnxruntime: the windows and carried state of `qs.test_perplexity`."""
    from lm_training import batchify, windows

    from dkp_deploy import runtime

    sess = runtime.session(path)
    names = [i.name for i in sess.get_inputs()]
    data = batchify(corpus.test[: s.eval_tokens], 10).numpy()
    state_shape = [d if isinstance(d, int) else 10 for d in sess.get_inputs()[1].shape]
    h, c = np.zeros(state_shape, np.float32), np.zeros(state_shape, np.float32)
    total, count = 0.0, 0
    for x, y in windows(torch.from_numpy(data), s.bptt):
        logits, h, c = sess.run(None, dict(zip(names, (x.numpy(), h, c))))
        z = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        total -= float(logp[np.arange(len(z)), y.numpy().reshape(-1)].sum())
        count += y.numel()
    return math.exp(total / count)


def export_files(model: WordLM, out: Path) -> tuple[dict[str, Path], dict[str, tuple]]:
    """The hub, the step graphs (doped, dense baseline) and the sequence graph; the args each was exported with."""
    from dkp_deploy.export import export

    L, H = model.rnn.num_layers, model.rnn.hidden_size
    batch = torch.export.Dim("batch")
    # example inputs of batch 2: torch.export specializes a dimension of size 1
    step_args = (torch.zeros(1, 2, dtype=torch.int64), (torch.zeros(L, 2, H), torch.zeros(L, 2, H)))
    step_dims = ({1: batch}, ({1: batch}, {1: batch}))
    seq_args, seq_dims = _sequence_io(model)
    files = {
        "hub": export(model, step_args, out / "model.hub.onnx", dynamic_shapes=step_dims, mode="step",
                      sparse_impl="hub", **STEP_IO),
        "step": export(model, step_args, out / "model.step.onnx", dynamic_shapes=step_dims, mode="step", **STEP_IO),
        "step_dense": export(model, step_args, out / "model.step.dense.onnx", dynamic_shapes=step_dims,
                             mode="step", sparse_impl="dense", **STEP_IO),
        "sequence": export(model, seq_args, out / "model.onnx", dynamic_shapes=seq_dims),
        "sequence_hub": export(model, seq_args, out / "model.hub.sequence.onnx", dynamic_shapes=seq_dims,
                               sparse_impl="hub"),
        "sequence_int8": export(model, seq_args, out / "model.int8.onnx", dynamic_shapes=seq_dims, quantize="int8"),
        "sequence_int8_dynamic": export(model, seq_args, out / "model.int8-dynamic.onnx", dynamic_shapes=seq_dims,
                                        quantize="int8-dynamic"),
    }
    return files, {"hub": step_args, "step": step_args, "step_dense": step_args, "sequence": seq_args,
                   "sequence_int8": seq_args, "sequence_int8_dynamic": seq_args}


def parity(model: WordLM, files: dict[str, Path], args: dict[str, tuple]) -> dict[str, Any]:
    """Each lowered file against the torch model in float64 (and the step files against the hub too)."""
    from dkp_deploy.validate import validate_export

    out = {}
    hubs = {"step": files["hub"], "step_dense": files["hub"], "sequence_int8": files["sequence_hub"],
            "sequence_int8_dynamic": files["sequence_hub"]}
    for name in ("step", "step_dense", "sequence", "sequence_int8", "sequence_int8_dynamic"):
        # the int8 files against their hub with the weights dequantized (the torch model holds the float ones)
        report = validate_export(files[name], hub=hubs.get(name), model=model, args=args[name])
        e2e = [r.error for r in report.rows if r.kind == "e2e"]
        layer = [r.error for r in report.rows if r.kind == "layer"]
        out[name] = {"passed": report.passed, "reference": "its hub, weights dequantized" if name in hubs and
                     "int8" in name else "torch float64", "max_e2e_error": max(e2e, default=math.nan),
                     "max_layer_error": max(layer, default=math.nan), "table": report.table()}
    return out


def generate(path: Path, corpus: qs.Corpus, *, prompt: str, tokens: int, seed: int = 0,
             temperature: float = 0.8) -> str:
    """Sample `tokens` words after `prompt` with the step graph in onnxruntime (state carried by hand)."""
    from dkp_deploy import runtime

    sess = runtime.session(path)
    state_shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[1].shape]
    h, c = np.zeros(state_shape, np.float32), np.zeros(state_shape, np.float32)
    rng = np.random.default_rng(seed)
    ids, logits = corpus.ids(prompt), None
    for t in ids:
        logits, h, c = sess.run(None, {"x_t": np.array([[t]], np.int64), "h": h, "c": c})
    out = list(ids)
    for _ in range(tokens):
        z = logits[0, 0].astype(np.float64) / temperature
        z[0] = -np.inf  # never sample <unk>
        p = np.exp(z - z.max())
        out.append(int(rng.choice(len(p), p=p / p.sum())))
        logits, h, c = sess.run(None, {"x_t": np.array([[out[-1]]], np.int64), "h": h, "c": c})
    return corpus.text(out)


def speed(files: dict[str, Path], model: WordLM, rounds: int) -> dict[str, float]:
    """Median seconds per batch-1 step: the doped step graph (custom op) vs its dense-W baseline."""
    from dkp_deploy.bench.measure import Budget, compare, ort_runner, ort_session

    L, H = model.rnn.num_layers, model.rnn.hidden_size
    rng = np.random.default_rng(0)
    feeds = {"x_t": np.array([[3]], np.int64), "h": rng.standard_normal((L, 1, H)).astype(np.float32),
             "c": rng.standard_normal((L, 1, H)).astype(np.float32)}
    fns = {k: ort_runner(ort_session(files[k]), feeds) for k in ("step", "step_dense")}
    return {k: t.seconds for k, t in compare(fns, Budget(rounds=rounds, repeats=50, warmup=5)).items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compress a plain torch LSTM LM, fine-tune, export and run it.")
    p.add_argument("--out", type=Path, required=True, help="folder for the artifacts (created)")
    p.add_argument("--dense", type=Path, help="a WordLM state_dict (torch.save); default: train one here")
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
        model = WordLM(corpus.vocab_size, s.hidden, dropout=s.dropout)
        model.load_state_dict(torch.load(args.dense, weights_only=True))
        model.eval()
    else:
        model = train_dense(corpus, replace(s, lr=3e-3), steps=3 * s.steps, progress=progress)
        torch.save(model.state_dict(), args.out / "dense.pt")
    ppl = {"dense": qs.test_perplexity(model, corpus, s)}
    dense_files = dense_int8_files(model.eval(), args.out)
    model, compression = dkp_deploy.compress(model, cf=s.cf, include=["rnn"], return_report=True)
    ppl["compressed"] = qs.test_perplexity(model, corpus, s)
    t0 = time.perf_counter()
    model = qs.train_lm(corpus, s, model=model, progress=progress, desc="CMR fine-tune")
    tune_s = time.perf_counter() - t0
    ppl["fine_tuned"] = qs.test_perplexity(model, corpus, s)
    files, export_args = export_files(model, args.out)
    layers = dkp_deploy.nn.doped_layers(model)
    weights = sum(la.out_features * la.in_features for la in layers)
    par = parity(model, files, export_args)
    # the layers left dense (embedding, decoder) can take onnxruntime's int8 on top of our int8 doped file
    both = int8_dynamic(files["sequence_int8"], args.out / "model.int8.dynamic.onnx")
    compared = {"doped fp32": files["sequence"], "doped int8": files["sequence_int8"],
                "doped int8-dynamic": files["sequence_int8_dynamic"],
                "doped int8 + quantize_dynamic of the rest": both,
                "dense int8 (ORT quantize_dynamic)": dense_files["dense_int8"], "dense fp32": dense_files["dense"]}
    onnx_ppl = {name: onnx_perplexity(path, corpus, s) for name, path in compared.items()}
    onnx_bytes = {name: path.stat().st_size for name, path in compared.items()}
    summary = {
        "setting": asdict(s), "vocab": corpus.vocab_size, "perplexity": ppl, "fine_tune_s": tune_s,
        "onnx_perplexity": onnx_ppl, "onnx_bytes": onnx_bytes,
        "lstm_cf": weights / sum(la.structured_params + la.nnz for la in layers),
        "compress_report": str(compression),
        "sizes_bytes": {k: f.stat().st_size for k, f in files.items()},
        "parity": {k: {kk: vv for kk, vv in v.items() if kk != "table"} for k, v in par.items()},
        "speed_s": speed(files, model, s.speed_rounds),
        "generated": generate(files["step"], corpus, prompt=qs.PROMPT, tokens=s.gen_tokens, seed=s.seed),
        "files": {k: str(f) for k, f in files.items()},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    kb = {k: f"{v / 1024:.0f} KiB" for k, v in summary["sizes_bytes"].items()}
    sp = summary["speed_s"]
    print(f"model        a plain torch WordLM (2 x {s.hidden} nn.LSTM, vocab {corpus.vocab_size}); compress:")
    print("\n".join("  " + line for line in str(compression).splitlines()))
    print(f"perplexity   dense {ppl['dense']:.1f} -> compressed {ppl['compressed']:.1f} -> after {s.steps} CMR "
          f"fine-tuning steps {ppl['fine_tuned']:.1f} ({tune_s:.0f} s)")
    print("onnxruntime  test perplexity / file: " + ", ".join(
        f"{k} {v:.1f} / {onnx_bytes[k] / 1024:.0f} KiB" for k, v in onnx_ppl.items()))
    print(f"files        hub {kb['hub']}, step (custom op) {kb['step']}, step dense {kb['step_dense']}, "
          f"sequence {kb['sequence']}; LSTM CF {summary['lstm_cf']:.2f}x")
    for name, v in summary["parity"].items():
        layer = "" if math.isnan(v["max_layer_error"]) else f", max layer error vs the hub {v['max_layer_error']:.2g}"
        print(f"parity       {name:21s} {'PASSED' if v['passed'] else 'FAILED'} vs {v['reference']}: max end-to-end "
              f"error {v['max_e2e_error']:.2g}{layer}")
    print(f"speed        one step, batch 1, 1 thread (median): doped {sp['step'] * 1e6:.0f} us, dense "
          f"{sp['step_dense'] * 1e6:.0f} us ({sp['step_dense'] / sp['step']:.2f}x)")
    print("generated    (step graph, onnxruntime, seed 0):")
    print("  " + summary["generated"])
    print(f"artifacts    {', '.join(sorted(f.name for f in files.values()))}, summary.json in {args.out}")
    if not all(v["passed"] for v in summary["parity"].values()):
        for v in par.values():
            print(v["table"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
