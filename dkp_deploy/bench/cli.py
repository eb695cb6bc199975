"""`dkp-bench`: the paper's speed claims redone on this machine (kernel, layer, model, profile).

    dkp-bench                 full run: regenerates benchmarks/results/ (JSON + PNG), docs/performance.md and the
                              README's performance tables (between its dkp-bench markers)
    dkp-bench --quick         small shapes and few samples (CI smoke, well under a minute); writes nothing
                              unless --out / --json / --docs say where
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import DkpError, InputError
from ..fileio import atomic_output
from . import environment, measure, report

SECTIONS = ("kernel", "layer", "model", "profile")
RESULTS_DIR = Path("benchmarks/results")
DOCS_PATH = Path("docs/performance.md")
README_PATH = Path("README.md")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dkp-bench",
        description="Benchmark doped-KP deployment vs dense: kernel (figure 2), layer, LSTM LMs (table 7), "
        "per-node profile. Speed-ups are ratios of medians measured side by side in the same run.",
    )
    p.add_argument("--quick", action="store_true", help="small shapes, few samples: a smoke run under a minute")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime (default 1)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write all results as JSON here")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help=f"directory for results.json and PNG plots (full run default: {RESULTS_DIR})")
    p.add_argument("--docs", type=Path, metavar="PATH",
                   help=f"write the Markdown performance page here (full run default: {DOCS_PATH})")
    p.add_argument("--readme", type=Path, metavar="PATH",
                   help="refresh the performance tables between the dkp-bench markers of this README "
                        f"(full run default: {README_PATH}, when it exists)")
    p.add_argument("--no-tflite", action="store_true", help="skip the TFLite rows")
    return p


def _config(quick: bool) -> dict[str, Any]:
    from . import kernel, layer, model, workloads

    if quick:
        return {
            "budget": measure.QUICK,
            "kernel": {"shapes": ((256, 256),), "sparsities": kernel.QUICK_SPARSITIES},
            "layer": {"shape": (416, 208), "kron": None, "cfs": layer.CFS, "batches": layer.BATCHES},
            "model": {"shapes": (workloads.QUICK,)},
            "profile": {"shape": workloads.QUICK, "runs": 20},
        }
    return {
        "budget": measure.FULL,
        "kernel": {"shapes": kernel.SHAPES, "sparsities": kernel.SPARSITIES},
        "layer": {"shape": layer.SHAPE, "kron": workloads.MEDIUM_KRON, "cfs": layer.CFS, "batches": layer.BATCHES},
        "model": {"shapes": model.SHAPES},
        "profile": {"shape": workloads.MEDIUM[25], "runs": 300},
    }


def _log(msg: str) -> None:
    print(f"dkp-bench: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections; return every result, the environment and the tables' source rows."""
    from . import kernel, layer, model, profile

    cfg = _config(args.quick)
    budget, tfl = cfg["budget"], not args.no_tflite
    notes = []
    if tfl and (missing := _tflite_missing()):
        tfl = False
        notes.append(f"TFLite rows skipped: {missing}")
        _log(notes[-1])
    results: dict[str, Any] = {
        "command": " ".join(["dkp-bench", *(shlex.quote(a) for a in args.argv)]),
        "quick": args.quick,
        "environment": environment.capture(args.threads),
        "seconds": {},
        "notes": notes,
    }
    for section in SECTIONS:
        if section not in args.only:
            continue
        t0 = time.perf_counter()
        _log(f"{section} ...")
        if section == "kernel":
            k = cfg["kernel"]
            results["kernel"], results["kernel_op_rows"] = kernel.run(
                k["shapes"], k["sparsities"], 1, args.threads, budget, tflite=tfl
            )
        elif section == "layer":
            c = cfg["layer"]
            results["layer"] = layer.run(c["shape"], c["cfs"], c["batches"], args.threads, budget, c["kron"], tfl)
        elif section == "model":
            results["model"] = model.run(cfg["model"]["shapes"], args.threads, budget, tflite=tfl)
        elif section == "profile":
            c = cfg["profile"]
            results["profile"] = profile.step_profiles(c["shape"], args.threads, c["runs"])
        results["seconds"][section] = round(time.perf_counter() - t0, 1)
    results["environment"]["load_average_at_end"] = environment.capture(args.threads)["load_average_1_5_15"]
    results["targets"] = report.targets(results.get("layer", []), results.get("model", []))
    return results


def _tflite_missing() -> str | None:
    """Why the TFLite path cannot run here (its converter or an interpreter is missing), or None."""
    try:
        from ..converters.tflite import to_tflite  # noqa: F401
        from ..tflite import runtime_name

        runtime_name()  # raises when neither ai-edge-litert nor tflite-runtime is installed
    except (ImportError, DkpError) as e:
        return str(e)
    return None


def tables(results: dict[str, Any]) -> list[report.Table]:
    out: list[report.Table] = []
    if results.get("targets"):
        out += report.targets_table(results["targets"])
    if results.get("kernel"):
        out += report.kernel_table(results["kernel"])
    if results.get("layer"):
        out += report.layer_table(results["layer"])
    if results.get("model"):
        out += report.model_table(results["model"])
    for key, prof in results.get("profile", {}).items():
        if key.endswith("custom"):
            what = "LSTM layers alone" if key.startswith("lstm") else "whole LM"
            out += report.profile_table(prof, f"Profile, {prof['model']} step, {what}, ORT custom")
    return out


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    from . import plots as p

    footer = environment.describe(results["environment"])
    made = []
    if results.get("kernel"):
        made.append(p.kernel_plot(results["kernel"], out / "kernel.png", footer))
    if results.get("layer"):
        made.append(p.layer_plot(results["layer"], out / "layer.png", footer))
    if results.get("model"):
        made.append(p.model_plot(results["model"], out / "model.png", footer))
    prof = results.get("profile", {}).get("lstm_custom")
    if prof:
        same = [r for r in results.get("model", []) if r["model"] == prof["model"]]
        step = same[0]["seconds"]["lstm_custom"] if same else None
        made.append(p.profile_plot(prof, out / "profile.png", footer, f"{prof['model']} LSTM step, ORT custom",
                                   step * 1e6 if step else None))
    return made


def _write_json(results: dict[str, Any], path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(_finite(results), indent=1, sort_keys=False) + "\n")


def _finite(x: Any) -> Any:
    """JSON has no inf/nan: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    if args.threads < 1:
        _log("--threads must be at least 1")
        return 2
    # Only a full run (every section, full size) refreshes the committed results, page and README by default.
    full = not args.quick and set(args.only) == set(SECTIONS)
    out = args.out if args.out is not None else (RESULTS_DIR if full else None)
    docs = args.docs if args.docs is not None else (DOCS_PATH if full else None)
    readme = args.readme if args.readme is not None else (README_PATH if full and README_PATH.is_file() else None)
    try:
        if readme is not None:  # before the minutes of measuring, not after
            if not readme.is_file():
                raise InputError("no such file", readme)
            if report.README_BEGIN not in readme.read_text():
                raise InputError(f"no {report.README_BEGIN!r} ... {report.README_END!r} block to refresh", readme)
        for target in (out, args.json.parent if args.json else None, docs.parent if docs else None):
            if target is not None and not target.is_dir():
                if target == out:
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    raise InputError("output directory does not exist", target)
        results = run(args)
        table_list = tables(results)
        print(report.render_text(table_list))
        print(environment.describe(results["environment"]))
        if args.json:
            _write_json(results, args.json)
        made: list[Path] = []
        if out is not None:
            _write_json(results, out / "results.json")
            made = plots(results, out)
        if docs is not None:
            with atomic_output(docs) as tmp:
                tmp.write_text(report.performance_page(results, table_list, made, docs))
        if readme is not None:
            text = readme.read_text()
            new = report.replace_readme_section(text, report.readme_section(results, table_list, made, readme))
            with atomic_output(readme) as tmp:
                tmp.write_text(new)
    except DkpError as e:
        _log(str(e))
        return 2
    except ImportError as e:
        _log(f"a component is missing: {e}")
        return 2
    for path in [args.json, out, docs, readme]:
        if path is not None:
            _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
