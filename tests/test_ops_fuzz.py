"""Malformed SparseMatVec graphs and inputs end in onnxruntime errors naming the input, never in a crash.

The cases run in a child process (tests/ops_fuzz.py): a crash there (SIGSEGV, abort) fails this test with the case
that caused it instead of taking pytest down.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_malformed_inputs_end_in_onnxruntime_errors(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ops_fuzz.py")], capture_output=True, text=True, timeout=300
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode in (0, 1), f"crashed (rc {proc.returncode}) on case {lines[-1:]}:\n{proc.stderr[-2000:]}"
    summary = [line for line in lines if line.startswith("FUZZ ")]
    assert summary, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(summary[-1][len("FUZZ ") :])
    with capsys.disabled():  # the count shows in every run, not only with -s
        print(
            f"\nfuzz: {result['tried']} malformed cases tried ({result['curated']} curated, {result['mutations']} "
            f"hypothesis mutations of which {result['still_valid']} stayed valid and matched scipy)"
        )
    assert not result["bad"], "\n".join(result["bad"])
    assert result["curated"] > 100 and result["mutations"] >= 100
