"""PNG plots of the benchmark results: figure 2 (kernel), layer, table 7 (model) and the step profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fileio import atomic_output

COLORS = {
    "ORT SparseMatVec (ours)": "#1f77b4",
    "ORT custom": "#1f77b4",
    "ORT portable": "#9467bd",
    "ORT SparseToDenseMatMul": "#d62728",
    "scipy CSR": "#2ca02c",
    "TFLite sparse FC": "#ff7f0e",
    "TFLite doped": "#ff7f0e",
    "TFLite doped vs XNNPACK": "#ffbb78",
    "TFLite": "#ff7f0e",
    "whole LM, ORT custom": "#17becf",
}
MARKERS = "osD^vP*X"
LAYER_LABELS = {
    "ORT custom": "ORT custom (SparseMatVec) vs ORT dense",
    "ORT portable": "ORT portable (standard ops) vs ORT dense",
    "TFLite doped": "TFLite doped vs TFLite dense (builtin kernels)",
    "TFLite doped vs XNNPACK": "TFLite doped vs TFLite dense with XNNPACK",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, footer: str) -> Path:
    fig.text(0.01, 0.005, footer, fontsize=7, color="#555555", ha="left", va="bottom")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    _plt().close(fig)
    return path


def _ratio_bars(ax, xs, vals, width, label, color) -> None:
    """Speed-up bars on a log2 axis, drawn from the 1x baseline (up: faster, down: slower), labelled."""
    plt = _plt()
    heights = [v - 1.0 if v > 0 else 0.0 for v in vals]
    bars = ax.bar(xs, heights, width, bottom=1.0, label=label, color=color)
    labels = [(f"{v:.1f}x" if v >= 1 else f"{v:.2f}x") if v > 0 else "" for v in vals]
    ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}x"))


def kernel_plot(rows: list[dict[str, Any]], path: Path, footer: str) -> Path:
    """Figure 2 redone: speed-up over dense vs sparsity, one panel per shape, one line per implementation."""
    plt = _plt()
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    fig, axes = plt.subplots(1, len(shapes), figsize=(6.2 * len(shapes), 4.6), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        sub = [r for r in rows if r["shape"] == shape]
        sparsities = sorted({r["sparsity"] for r in sub})
        pos = {s: i for i, s in enumerate(sparsities)}  # evenly spaced: the interesting range is 90-99.5%
        for k, impl in enumerate(dict.fromkeys(r["impl"] for r in sub)):
            pts = sorted((r["sparsity"], r["speedup"]) for r in sub if r["impl"] == impl)
            ax.plot([pos[s] for s, _ in pts], [v for _, v in pts], marker=MARKERS[k % len(MARKERS)],
                    label=impl, color=COLORS.get(impl), linewidth=1.8)
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="dense baseline (1x)")
        ax.set_yscale("log", base=2)
        ax.set_xticks(range(len(sparsities)), [f"{100 * s:g}" for s in sparsities])
        ax.set_xlabel("sparsity of W_s (%)")
        ax.set_ylabel("speed-up over its own dense mat-vec")
        ax.set_title(f"W_s @ x, {shape}, batch {sub[0]['batch']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}x"))
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Sparse mat-vec speed-up vs sparsity (paper figure 2 redone)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path, footer)


def layer_plot(rows: list[dict[str, Any]], path: Path, footer: str, target: float = 5.0) -> Path:
    """Grouped bars: speed-up of the doped layer over dense per CF, per runtime/lowering, one panel per batch."""
    plt = _plt()
    batches = list(dict.fromkeys(r["batch"] for r in rows))
    cfs = list(dict.fromkeys(r["cf"] for r in rows))
    impls = list(dict.fromkeys(f"{r['runtime']} {r['impl']}" for r in rows))
    fig, axes = plt.subplots(1, len(batches), figsize=(5.6 * len(batches), 5.2), squeeze=False, sharey=True)
    width = 0.8 / max(len(impls), 1)
    for ax, b in zip(axes[0], batches):
        for k, impl in enumerate(impls):
            vals = [
                next((r["speedup"] for r in rows if (r["batch"], r["cf"], f"{r['runtime']} {r['impl']}") ==
                      (b, cf, impl)), 0.0)
                for cf in cfs
            ]
            xs = [i + (k - (len(impls) - 1) / 2) * width for i in range(len(cfs))]
            _ratio_bars(ax, xs, vals, width, impl, COLORS.get(impl))
        for i, cf in enumerate(cfs):
            bound = next(r["bytes_reduction"] for r in rows if r["cf"] == cf)
            ax.hlines(bound, i - 0.45, i + 0.45, color="#555555", linestyle="--", linewidth=1.5,
                      label="bytes bound" if i == 0 else None)
        ax.axhline(target, color="#d62728", linestyle=":", linewidth=1.2, label=f"target {target:g}x")
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_xticks(range(len(cfs)), [f"{cf}x CF" for cf in cfs])
        ax.set_title(f"doped layer {rows[0]['shape']}, batch {b}")
        ax.set_ylabel("speed-up over dense (same runtime)")
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, [LAYER_LABELS.get(k, k) for k in labels], fontsize=8, loc="lower center", ncol=3,
               bbox_to_anchor=(0.5, 0.035))
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return _save(fig, path, footer)


def model_plot(rows: list[dict[str, Any]], path: Path, footer: str, target: float = 5.0) -> Path:
    """Table 7 redone as bars: step-graph speed-ups per model, with the paper's number and the bytes bound."""
    plt = _plt()
    series = [
        ("LSTM step, ORT custom", "speedup_lstm_custom", "#1f77b4"),
        ("LSTM step, ORT portable", "speedup_lstm_portable", "#9467bd"),
        ("LSTM step, TFLite (vs dense, builtin kernels)", "speedup_lstm_tflite", "#ff7f0e"),
        ("whole LM step, ORT custom", "speedup_lm_custom", "#17becf"),
    ]
    series = [s for s in series if any(r.get(s[1]) for r in rows)]
    fig, ax = plt.subplots(figsize=(max(7.5, 2.4 * len(rows)) + 2.2, 4.8))
    width = 0.8 / len(series)
    for k, (label, key, color) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
        _ratio_bars(ax, xs, [r.get(key) or 0.0 for r in rows], width, label, color)
    labelled = set()
    for i, r in enumerate(rows):
        marks = [("bytes bound, LSTM", r["bytes_bound_lstm"], "#555555", "--")]
        if r.get("paper_speedup"):
            marks.append(("paper, LSTM (RPi 4, Eigen)", r["paper_speedup"], "black", "-"))
        for label, y, color, style in marks:
            ax.hlines(y, i - 0.45, i + 0.45, color=color, linestyle=style, linewidth=2,
                      label=None if label in labelled else label)
            labelled.add(label)
    ax.axhline(target, color="#d62728", linestyle=":", linewidth=1.2, label=f"target {target:g}x")
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(rows)), [
        f"{r['model']}\nMAC red. {r['mac_reduction_lstm']:.1f}x, bytes {r['bytes_bound_lstm']:.1f}x" for r in rows
    ], fontsize=8)
    ax.set_ylabel("speed-up over the dense step graph")
    ax.set_title("Doped-KP LSTM LMs, one step, batch 1 (paper table 7 redone)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path, footer)


def profile_plot(prof: dict[str, Any], path: Path, footer: str, title: str, step_us: float | None = None) -> Path:
    """Horizontal bars: microseconds per step by op type, plus the time outside kernels (profiling included).

    `step_us`: the same step timed without profiling (model section), quoted because the profiler itself adds
    per-node cost to every number here.
    """
    plt = _plt()
    items = [(f"{p['op']} (x{p['count']})", p["us"]) for p in prof["by_op"]]
    items.append(("(outside kernels, incl. profiler)", max(prof["overhead_us"], 0.0)))
    items.sort(key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(9.5, 0.35 * len(items) + 1.9))
    bars = ax.barh([k for k, _ in items], [v for _, v in items],
                   color=["#7f7f7f" if k.startswith("(") else "#1f77b4" for k, _ in items])
    ax.bar_label(bars, fmt="%.1f us", fontsize=7, padding=2)
    ax.set_xlabel("microseconds per profiled step (median per node)")
    unprofiled = f"; {step_us:.0f} us without profiling" if step_us else ""
    ax.set_title(f"{title}: {prof['nodes']} nodes, {prof['run_us']:.0f} us per profiled run{unprofiled}",
                 fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlim(0, max(v for _, v in items) * 1.18 if items else 1)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, path, footer)
