"""The benchmark's tables: built once from the result rows, rendered as plain text (terminal) or Markdown (docs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Table = tuple[str, list[str], list[list[str]]]  # title, headers, rows

# The targets: (what, result key path, minimum speed-up)
TARGET = 5.0


def _x(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _mb(b: float) -> str:
    return f"{b / 1e6:.2f} MB"


def _us(s: float) -> str:
    return f"{s * 1e6:.0f} us" if s >= 1e-5 else f"{s * 1e6:.1f} us"


def kernel_table(rows: list[dict[str, Any]]) -> list[Table]:
    """Figure 2 as numbers: speed-up over each implementation's dense baseline, per sparsity."""
    tables = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        sub = [r for r in rows if r["shape"] == shape]
        sparsities = sorted({r["sparsity"] for r in sub})
        impls = list(dict.fromkeys(r["impl"] for r in sub))
        body = []
        for impl in impls:
            by_s = {r["sparsity"]: r for r in sub if r["impl"] == impl}
            base = next(iter(by_s.values()))
            body.append(
                [impl, f"{base.get('baseline', '')} {_us(base['baseline_seconds'])}"]
                + [_x(by_s[s]["speedup"]) if s in by_s else "-" for s in sparsities]
            )
        tables.append(
            (f"Kernel W_s @ x, {shape}, batch {sub[0]['batch']}: speed-up over dense by sparsity",
             ["implementation", "dense baseline"] + [f"{100 * s:g}%" for s in sparsities], body)
        )
    return tables


def layer_table(rows: list[dict[str, Any]]) -> list[Table]:
    cfs = list(dict.fromkeys(r["cf"] for r in rows))
    batches = list(dict.fromkeys(r["batch"] for r in rows))
    impls = list(dict.fromkeys((r["runtime"], r["impl"]) for r in rows))
    headers = ["CF", "W_s sparsity", "MAC red.", "bytes red."] + [
        f"{rt} {impl} b{b}" for b in batches for rt, impl in impls
    ]
    body = []
    for cf in cfs:
        first = next(r for r in rows if r["cf"] == cf)
        line = [f"{cf}x", _pct(first["sparsity"]), _x(first["mac_reduction"], 1), _x(first["bytes_reduction"], 1)]
        for b in batches:
            for rt, impl in impls:
                r = next((r for r in rows if (r["cf"], r["batch"], r["runtime"], r["impl"]) == (cf, b, rt, impl)), None)
                line.append(_x(r["speedup"]) if r else "-")
        body.append(line)
    base = {
        (r["runtime"], r["batch"]): r["baseline_seconds"] for r in rows
    }
    note = ", ".join(f"{rt} b{b} {_us(s)}" for (rt, b), s in base.items())
    shape = rows[0]["shape"] if rows else ""
    tables = [(f"Doped layer {shape} (+ bias) vs dense, speed-up; dense baselines: {note}", headers, body)]
    sized = [r for r in rows if r.get("file_bytes") and r["batch"] == batches[0]]
    if sized:
        kinds = list(sized[0]["file_bytes"])
        body = [[f"{r['cf']}x", *(_mb(r["file_bytes"][k]) for k in kinds),
                 _x(r["file_bytes"]["ORT int8 dense"] / r["file_bytes"]["custom int8"], 1)]
                for r in sized if r["runtime"] == "ORT" and r["impl"] == "custom"]
        tables.append((f"Doped layer {shape}: file sizes", ["CF", *kinds, "ORT int8 dense / custom int8"], body))
    return tables


def model_table(rows: list[dict[str, Any]]) -> list[Table]:
    headers = [
        "model", "CF", "W_s sparsity (paper)", "MAC red. LSTM (paper)", "LSTM weights dense -> doped", "bytes bound",
        "dense step", "doped step", "LSTM step ORT custom", "ORT portable", "TFLite (vs XNNPACK dense)",
        "TFLite 1x4 blocks vs XNNPACK dense",
        "paper (RPi 4)",
        "whole LM ORT custom", "whole LM bytes bound", "LSTM step: ORT int8 dense / doped vs int8",
        "whole LM: ORT int8 dense / doped vs int8", "LM, decoder doped too: vs dense / vs int8",
        "int8 doped vs ORT int8: LSTM step (file) / LM, decoder doped (file)",
        "int8-dynamic doped vs ORT int8: LSTM step / LM, decoder doped",
        "LM step general path (speed vs native)",
    ]
    body = []
    for r in rows:
        paper_sp = f" ({_pct(r['paper_sparsity'])})" if r.get("paper_sparsity") else ""
        paper_mac = f" ({_x(r['paper_mac_reduction'])})" if r.get("paper_mac_reduction") else ""
        body.append([
            r["model"],
            f"{r['cf']:.1f}x",
            _pct(r["sparsity"]) + paper_sp,
            _x(r["mac_reduction_lstm"]) + paper_mac,
            f"{_mb(r['bytes_lstm_dense'])} -> {_mb(r['bytes_lstm'])}",
            _x(r["bytes_bound_lstm"], 1),
            _us(r["seconds"]["lstm_dense"]),
            _us(r["seconds"]["lstm_custom"]),
            _x(r["speedup_lstm_custom"]),
            _x(r["speedup_lstm_portable"]),
            _x(r.get("speedup_lstm_tflite"))
            + (f" ({_x(r['speedup_lstm_tflite_vs_xnnpack'])})" if r.get("speedup_lstm_tflite_vs_xnnpack") else ""),
            _x(r.get("speedup_lstm_tflite_1x4_vs_xnnpack")),
            _x(r.get("paper_speedup")),
            _x(r["speedup_lm_custom"]),
            _x(r["bytes_bound_model"], 1),
            f"{_x(r.get('speedup_lstm_int8'))} / {_x(r.get('lstm_custom_vs_int8'))}",
            f"{_x(r.get('speedup_lm_int8'))} / {_x(r.get('lm_custom_vs_int8'))}",
            f"{_x(r.get('speedup_lmd_custom'))} / {_x(r.get('lmd_custom_vs_int8'))}",
            f"{_x(r.get('lstm_custom_int8_vs_int8'))} ({_x(r.get('lstm_int8_file_ratio'), 1)} smaller) / "
            f"{_x(r.get('lmd_custom_int8_vs_int8'))} ({_x(r.get('lmd_int8_file_ratio'), 1)} smaller)",
            f"{_x(r.get('lstm_custom_int8dyn_vs_int8'))} / {_x(r.get('lmd_custom_int8dyn_vs_int8'))}",
            _x(r.get("general_vs_native_lm")),
        ])
    batch = rows[0]["batch"] if rows else 1
    title = f"LSTM LM step graph (batch {batch}) vs the dense step graph, speed-up (ORT unless stated)"
    return [(title, headers, body)]


def profile_table(prof: dict[str, Any], title: str) -> list[Table]:
    body = [[p["op"], str(p["count"]), f"{p['us']:.1f}", _pct(p["share"])] for p in prof["by_op"]]
    body.append(["(outside kernels)", "", f"{prof['overhead_us']:.1f}", ""])
    nodes = [[n["node"], n["op"], f"{n['us']:.1f}", _pct(n["share"])] for n in prof["top_nodes"]]
    return [
        (f"{title}: {prof['nodes']} nodes, run {prof['run_us']:.0f} us, kernels {prof['kernel_us']:.0f} us (by op)",
         ["op", "nodes", "us/step", "share of kernels"], body),
        (f"{title}: top nodes", ["node", "op", "us/step", "share of kernels"], nodes),
    ]


def targets(layer_rows: list[dict[str, Any]], model_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issues' targets (at the paper's shapes only): the measured ratio, what is needed and, for speed-ups
    against dense, the bytes and MAC bounds. Issue 13's int8 targets are the int8-dynamic files' (int8 with the
    activations quantized at run time, as onnxruntime's quantize_dynamic, integer accumulation); the weight-only
    int8 and the fp32 files' ratios against ORT int8 come with them as comparisons (needed None)."""
    out = []

    def add(target: str, measured: float | None, needed: float | None, **bounds: float) -> None:
        if measured is not None:
            holds = None if needed is None else measured >= needed
            out.append({"target": target, "speedup": measured, "needed": needed, "holds": holds, **bounds})

    for r in model_rows:
        if r["hidden"] == 650 and r["target_cf"] == 25:
            add("2x650 LSTM step at 25x, ORT custom vs dense (LSTM layers alone)", r["speedup_lstm_custom"], TARGET,
                bytes_bound=r["bytes_bound_lstm"], mac_bound=r["mac_reduction_lstm"])
            add("2x650 LSTM step at 25x, int8-dynamic doped vs ORT int8 dense", r.get("lstm_custom_int8dyn_vs_int8"),
                3.0)
            add("2x650 LSTM step at 25x, int8 weight-only doped vs ORT int8 dense", r.get("lstm_custom_int8_vs_int8"),
                None)
            add("2x650 LSTM step at 25x, ORT int8 dense file / int8 doped file", r.get("lstm_int8_file_ratio"), 8.0)
            add("whole 2x650 LM step, decoder doped (int8-dynamic) vs ORT int8 dense LM",
                r.get("lmd_custom_int8dyn_vs_int8"), 3.0)
            add("whole 2x650 LM step, decoder doped (int8 weight-only) vs ORT int8 dense LM",
                r.get("lmd_custom_int8_vs_int8"), None)
            add("whole 2x650 LM step, decoder doped (fp32) vs ORT int8 dense LM", r.get("lmd_custom_vs_int8"), None)
    for r in layer_rows:
        if (r["shape"], r["cf"]) != ("2600x1300", 20):
            continue
        key = (r["batch"], r["runtime"], r["impl"])
        if key == (1, "ORT", "custom"):
            for needed in (TARGET, 8.0):
                add(f"doped layer {r['shape']} at 20x, ORT custom vs dense, batch 1", r["speedup"], needed,
                    bytes_bound=r["bytes_reduction"], mac_bound=r["mac_reduction"])
            sizes = r.get("file_bytes") or {}
            if sizes.get("custom int8"):
                add(f"doped layer {r['shape']} at 20x, ORT int8 dense file / int8 doped file",
                    sizes["ORT int8 dense"] / sizes["custom int8"], 6.0)
        elif key[1] == "ORT vs int8" and key[2] in ("custom int8", "custom int8-dynamic") and key[0] in (1, 8):
            dynamic = key[2] == "custom int8-dynamic"
            add(f"doped layer {r['shape']} at 20x, {'int8-dynamic' if dynamic else 'int8 weight-only'} doped vs ORT "
                f"int8 dense, batch {key[0]}", r["speedup"], (3.0 if key[0] == 1 else 2.0) if dynamic else None)
        elif key == (8, "ORT 2 threads vs 1", "custom"):
            add(f"doped layer {r['shape']} at 20x, batch 8, 2 intra-op threads vs 1", r["speedup"], 1.6)
    return out


def _status(t: dict[str, Any]) -> str:
    return "comparison" if t["holds"] is None else "holds" if t["holds"] else "MISSED"


def targets_table(items: list[dict[str, Any]]) -> list[Table]:
    body = [
        [t["target"], _x(t["speedup"]), "-" if t["needed"] is None else f">= {t['needed']:g}x", _status(t),
         _x(t.get("bytes_bound"), 1), _x(t.get("mac_bound"), 1),
         _pct(t["speedup"] / t["bytes_bound"]) if t.get("bytes_bound") else "-"]
        for t in items
    ]
    return [("Targets", ["target", "measured", "needed", "", "bytes bound", "MAC bound", "of bytes bound"], body)]


def render_text(tables: Sequence[Table]) -> str:
    out = []
    for title, headers, body in tables:
        widths = [max(len(str(c)) for c in col) for col in zip(headers, *body)]
        line = "  ".join("-" * w for w in widths)
        out.append(title)
        out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        out.append(line)
        out.extend("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body)
        out.append("")
    return "\n".join(out)


def render_markdown(tables: Sequence[Table]) -> str:
    out = []
    for title, headers, body in tables:
        out.append(f"**{title}**\n")
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join("---" for _ in headers) + "|")
        out.extend("| " + " | ".join(str(c) for c in row) + " |" for row in body)
        out.append("")
    return "\n".join(out)


def performance_page(results: dict[str, Any], tables: Sequence[Table], plots: Sequence[Any], page: Any) -> str:
    """docs/performance.md: the command, the environment, the tables and the plots of one run."""

    from .environment import describe

    env = results["environment"]
    load0, load1 = env.get("load_average_1_5_15"), env.get("load_average_at_end")
    cpus = env.get("logical_cpus") or 1
    busy = max((load0 or [0])[0], (load1 or [0])[0])
    out = [
        "# Performance",
        "",
        "Made by one run of",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        f"on {describe(env)}. Raw numbers: `benchmarks/results/results.json`; plots below.",
        "",
        "Every speed-up is a ratio of two medians measured side by side in the same run (interleaved rounds, so "
        "load from other processes hits baseline and candidate alike), one thread, batch 1 unless stated. "
        "ORT is timed through IOBinding (inputs and outputs bound once), TFLite as `invoke()` with inputs set "
        "once: what is left is the runtime's own per-run cost plus its kernels.",
        "",
    ]
    if busy > 0.5 * cpus:
        out += [
            f"> Timings were taken under load (1-minute load average {busy:.1f} on {cpus} logical CPUs, shared "
            "with other jobs): absolute times are noisy; the ratios are the numbers to read.",
            "",
        ]
    out += [
        "**Bounds.** A batch-1 step is memory-bound: every weight byte is read once per step. The *bytes bound* is "
        "dense weight bytes / doped bytes (factors + CSR values and int32 indices + row pointers): the speed-up "
        "if the doped step ran at the dense step's bandwidth with no other cost. The MAC reduction is the compute "
        "bound. What separates us from them is the sparse kernel's load throughput and onnxruntime's per-node "
        "cost (see the reading below and the profile). An LSTM step can pass its bytes bound: the custom file runs "
        "each cell as one `ai.dkp::LSTMCell` node where the dense baseline keeps ten standard ones.",
        "",
        "## Reading this run",
        "",
        *findings(results),
        "- Inner-loop prototypes (which batch-1 sparse loop is fastest here, the ceiling it sets on the 20x layer), "
        "the cost of one more ORT node, and how much these numbers move from run to run on a shared machine: "
        "`benchmarks/README.md`.",
        "",
        "## Tables",
        "",
        render_markdown(tables),
    ]
    out += _image_lines(plots, page)
    return "\n".join(out)


def _image_lines(plots: Sequence[Any], page: Any) -> list[str]:
    """Markdown image lines for `plots`, linked relative to the Markdown file `page`."""
    import os
    from pathlib import Path

    out: list[str] = []
    for p in plots:
        rel = os.path.relpath(Path(p).resolve(), Path(page).resolve().parent)
        out += [f"![{Path(p).stem}]({rel})", ""]
    return out


README_BEGIN = "<!-- dkp-bench:begin: generated by a full dkp-bench run; edit dkp_deploy/bench/report.py -->"
README_END = "<!-- dkp-bench:end -->"
README_TABLES = ("Targets", "Kernel W_s @ x, 2600x1300", "Doped layer", "LSTM LM step graph")


def readme_section(results: dict[str, Any], tables: Sequence[Table], plots: Sequence[Any], readme: Any) -> str:
    """The README's performance tables and plots (between README_BEGIN and README_END), from one run."""
    from pathlib import Path

    from .environment import describe

    chosen = [t for t in tables if t[0].startswith(README_TABLES)]
    out = [
        README_BEGIN,
        f"Made by `{results['command']}` on {describe(results['environment'])}.",
        "",
        render_markdown(chosen),
    ]
    out += _image_lines([p for p in plots if Path(p).stem in ("kernel", "model")], readme)
    out.append(README_END)
    return "\n".join(out)


def replace_readme_section(text: str, section: str) -> str:
    """`text` with its README_BEGIN..README_END block replaced by `section`; unchanged when it has no block."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return text
    return text[:start] + section + text[end + len(README_END):]


def findings(results: dict[str, Any]) -> list[str]:
    """Data-derived reading of one run (Markdown bullets): bandwidths, where the step's time goes, the bounds."""
    out = []
    for t in results.get("targets", []):
        if t["needed"] is None:
            line = f"Comparison *{t['target']}*: **{t['speedup']:.2f}x** (no target)."
        else:
            line = (f"Target *{t['target']}*: **{t['speedup']:.2f}x** ({'holds' if t['holds'] else 'missed'}; "
                    f"needs {t['needed']:g}x).")
        if t.get("bytes_bound"):
            line += (f" Bytes bound {t['bytes_bound']:.1f}x, MAC bound {t['mac_bound']:.1f}x: we reach "
                     f"{100 * t['speedup'] / t['bytes_bound']:.0f}% of the bytes bound.")
        out.append(line)
    ours = [r for r in results.get("kernel", []) if r["impl"].endswith("(ours)") and r["M"] * r["N"] > 1 << 20]
    for r in ours:
        if abs(r["sparsity"] - 0.95) < 1e-9:
            nnz = round((1 - r["sparsity"]) * r["M"] * r["N"])
            dense_gbs = 4 * r["M"] * r["N"] / r["baseline_seconds"] / 1e9
            sparse_gbs = (8 * nnz + 4 * (r["M"] + 1)) / r["seconds"] / 1e9
            out.append(
                f"Kernel {r['shape']} at 95%: ORT's dense MatMul streams W at {dense_gbs:.0f} GB/s "
                f"({_us(r['baseline_seconds'])}); SparseMatVec moves its CSR bytes at {sparse_gbs:.0f} GB/s, "
                f"{nnz / r['seconds'] / 1e9:.2f} non-zeros/ns ({_us(r['seconds'])}). A random-pattern CSR mat-vec "
                "is bound by fetching x for each non-zero (a scalar load in the SELL-8 loop; on AVX-512 CPUs a masked "
                "16-lane register lookup per tile step, see docs/ops.md), not by bytes: that, not bandwidth, is what "
                "separates the kernel from the bytes bound."
            )
    small = [r for r in results.get("kernel", []) if r["impl"].endswith("(ours)") and r["M"] * r["N"] <= 1 << 16]
    if small:
        r = max(small, key=lambda q: q["sparsity"])
        out.append(
            f"Kernel {r['shape']}: ORT's dense MatMul takes {_us(r['baseline_seconds'])} and our op "
            f"{_us(r['seconds'])} even at {100 * r['sparsity']:g}% sparsity: at this size both are dominated by "
            "onnxruntime's fixed per-run cost (see benchmarks/prototypes/ort_node_cost.py), so the ratios compare "
            "overheads, unlike the paper's Eigen loop on a Cortex-A72."
        )
    for r in results.get("model", []):
        s = r["seconds"]
        out.append(
            f"{r['model']}: the dense LSTM step reads {_mb(r['bytes_lstm_dense'])} at "
            f"{r['bytes_lstm_dense'] / s['lstm_dense'] / 1e9:.0f} GB/s, the doped one {_mb(r['bytes_lstm'])} at "
            f"{r['bytes_lstm'] / s['lstm_custom'] / 1e9:.0f} GB/s. Whole LM {r['speedup_lm_custom']:.2f}x against a "
            f"bytes bound of {r['bytes_bound_model']:.1f}x (its dense {r['vocab']}-word decoder is not doped)."
        )
    if results.get("model"):
        out.append("A speed-up above its bytes bound means the doped working set fits a cache level the dense one "
                   "does not.")
    prof = results.get("profile", {}).get("lstm_custom")
    if prof:
        sparse = sum(p["us"] for p in prof["by_op"] if p["op"] == "SparseMatVec")
        others = [p for p in prof["by_op"] if p["op"] != "SparseMatVec"]
        n_other = sum(p["count"] for p in others)
        same = [r for r in results.get("model", []) if r["model"] == prof["model"]]
        step = f" (the step takes {_us(same[0]['seconds']['lstm_custom'])} without profiling)" if same else ""
        out.append(
            f"Profile of the {prof['model']} LSTM step: {_us(prof['run_us'] * 1e-6)} per profiled run{step}; the "
            f"profiler adds per-node cost, so read shares: SparseMatVec {100 * sparse / prof['kernel_us']:.0f}% of "
            f"kernel time, the other {n_other} nodes {sum(p['us'] for p in others):.0f} us, "
            f"{max(prof['overhead_us'], 0):.0f} us outside kernels."
        )
    env = results.get("environment", {})
    if env.get("caches"):
        out.append(
            "Caches here: " + ", ".join(f"{k} {v}" for k, v in env["caches"].items()) + ". The 13.5 MB dense "
            "2600 x 1300 W of the kernel and layer sections stays in L3 between calls (hence its high GB/s above); "
            "the dense LSTM steps (27 MB, 144 MB) run at the rates quoted per model. An edge CPU (the paper's "
            "Cortex-A72 has 1 MB of L2 and no L3) streams every one of these dense weights from DRAM, where the "
            "bytes bound is the one that counts."
        )
    return [f"- {line}" for line in out]
