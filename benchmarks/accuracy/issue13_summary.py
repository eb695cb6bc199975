"""Issue 13's table: LSTM-only doping vs doping the embedding and decoder too, from the runs of run_issue13.sh.

    .venv/bin/python benchmarks/accuracy/issue13_summary.py benchmarks/accuracy/results/issue13

Reads <dir>/<experiment>/results.json and writes <dir>/summary.json and <dir>/summary.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

EXPERIMENTS = {
    "lstm_only_cf20": "LSTM doped at 20x; embedding, decoder dense",
    "all_matched_cf20": "LSTM, embedding, decoder doped at one CF, same total weights as above",
    "all_cf10": "LSTM, embedding, decoder doped at 10x",
    "lstm_only_cf10": "LSTM doped at 10x; embedding, decoder dense",
}


def row(name: str, label: str, r: dict[str, Any], setting: dict[str, Any]) -> dict[str, Any]:
    return {"experiment": name, "label": label, "lstm_cf": r["lstm_cf"], "io_cf": r["io_cf"],
            "total_cf": r["total_cf"], "weights_stored_total": r["weights_stored_total"],
            "params_total": r["params_total"], "test_ppl": r["test_ppl"], "test_ppl_std": r.get("test_ppl_std", 0.0),
            "test_ppl_seeds": r.get("test_ppl_seeds", [r["test_ppl"]]), "valid_ppl": r["valid_ppl"],
            "valid_ppl_seeds": r.get("valid_ppl_seeds", [r["valid_ppl"]]), "seeds": r.get("seeds", [r["seed"]]),
            "train_s": r["train_s"], "setting": setting}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "issue13"
    rows = []
    for name, label in EXPERIMENTS.items():
        path = out / name / "results.json"
        if not path.exists():
            print(f"{path}: missing, skipped", file=sys.stderr)
            continue
        summary = json.loads(path.read_text())
        for r in summary["results"].values():
            rows.append(row(name, label, r, summary["setting"]))
    if not rows:
        return 2
    (out / "summary.json").write_text(json.dumps({"rows": rows}, indent=1))
    lines = ["| Configuration | LSTM CF | embedding / decoder CF | total CF | weights stored | params (all) | "
             "test ppl | valid ppl | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        test = f"{r['test_ppl']:.1f}" + (f" +- {r['test_ppl_std']:.1f}" if len(r["seeds"]) > 1 else "")
        seeds = ", ".join(f"{v:.1f}" for v in r["test_ppl_seeds"])
        lines.append(f"| {r['label']} | {r['lstm_cf']:.2f}x | {r['io_cf']:.3g}x | {r['total_cf']:.3g}x | "
                     f"{r['weights_stored_total']:,} | {r['params_total']:,} | {test} | {r['valid_ppl']:.1f} | "
                     f"{seeds} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
