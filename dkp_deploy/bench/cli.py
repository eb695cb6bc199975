"""`dkp-bench`: the paper's speed claims redone on this machine (kernel, layer, model, profile).

    dkp-bench                 results.json and PNG plots in --out (default ./dkp-bench-results); tables on stdout
    dkp-bench --quick         small shapes and few samples (CI smoke, well under a minute)
    dkp-bench --update-docs   also rewrites docs/performance.md and the README's performance tables (between its
                              dkp-bench markers) under --docs-root (default: the current directory); the results
                              then go to <docs-root>/benchmarks/results unless --out says otherwise
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
DEFAULT_OUT = Path("dkp-bench-results")
RESULTS_DIR = Path("benchmarks/results")  # under --docs-root: where the committed docs link their plots
DOCS_PATH = Path("docs/performance.md")
README_PATH = Path("README.md")
_QUIET = [False]  # --quiet: no progress lines on stderr


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from ..cli import Parser, add_common

    p = Parser(
        prog="dkp-bench",
        description="Benchmark doped-KP deployment vs dense: kernel (figure 2), layer, LSTM LMs (table 7), "
        "per-node profile. Speed-ups are ratios of medians measured side by side in the same run.",
    )
    add_common(p, json_help="print all results as JSON on stdout instead of the tables (errors too, as "
                            '{"error", "exit_code"})')
    p.add_argument("--quick", action="store_true", help="small shapes, few samples: a smoke run under a minute")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    p.add_argument("--threads", type=_positive_int, default=1, help="intra-op threads for every runtime (default 1)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help=f"directory for results.json and the PNG plots (default ./{DEFAULT_OUT}; with "
                        f"--update-docs: <docs-root>/{RESULTS_DIR})")
    p.add_argument("--update-docs", action="store_true",
                   help=f"rewrite {DOCS_PATH} and the performance tables of {README_PATH} under --docs-root")
    p.add_argument("--docs-root", type=Path, default=Path("."), metavar="DIR",
                   help="the dkp-deploy source tree whose docs --update-docs rewrites (default: current directory)")
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
    if not _QUIET[0]:
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
    from ..cli import EXIT_BAD_INPUT, one_line, report_error

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    _QUIET[0] = args.quiet or args.json
    root = args.docs_root
    out = args.out if args.out is not None else (root / RESULTS_DIR if args.update_docs else DEFAULT_OUT)
    docs, readme = (root / DOCS_PATH, root / README_PATH) if args.update_docs else (None, None)
    try:
        if readme is not None:  # before the minutes of measuring, not after
            if not root.is_dir():
                raise InputError("--docs-root is not a directory", root)
            if not readme.is_file():
                raise InputError("no README.md here: give the source tree with --docs-root", readme)
            if report.README_BEGIN not in readme.read_text():
                raise InputError(f"no {report.README_BEGIN!r} ... {report.README_END!r} block to refresh", readme)
            if not docs.parent.is_dir():
                raise InputError("no docs/ folder here: give the source tree with --docs-root", docs.parent)
        if out.exists() and not out.is_dir():
            raise InputError("--out is not a directory", out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the output directory: {e.strerror}", out) from None
        results = run(args)
        table_list = tables(results)
        if args.json:
            print(json.dumps(_finite(results)))
        elif not args.quiet:
            print(report.render_text(table_list))
            print(environment.describe(results["environment"]))
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
        return report_error("dkp-bench", str(e), EXIT_BAD_INPUT, args.json)
    except ImportError as e:
        return report_error("dkp-bench", f"a component is missing: {e} (install dkp-deploy[bench])", EXIT_BAD_INPUT,
                            args.json)
    except OSError as e:  # disk full, permission denied while writing the results
        where = f"{e.filename}: " if e.filename else ""
        return report_error("dkp-bench", f"{where}{e.strerror or e}", EXIT_BAD_INPUT, args.json)
    for path in [out, docs, readme]:
        if path is not None:
            _log(f"wrote {one_line(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
