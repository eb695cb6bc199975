"""The README's Python usage examples run as printed (in a scratch directory)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _run_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *calls: str, check: str) -> set[str]:
    """Run the README's first python block that makes every one of `calls`, then `check`; the files it wrote."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if all(c in b for c in calls))
    script = tmp_path / "example.py"
    script.write_text(example + f"\n{check}\n")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    return {p.name for p in tmp_path.iterdir()}


def test_readme_usage_example_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    written = _run_example(tmp_path, monkeypatch, "to_onnx(", "assert_parity(",
                           check='assert out["y"].shape == (37, 1, 128) and out["hn"].shape == (2, 1, 128)')
    assert {"lstm.pt", "lstm.onnx", "lstm.tflite"} <= written


def test_readme_export_example_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    written = _run_example(tmp_path, monkeypatch, "dkp_deploy.export(", "assert_parity(",
                           check="assert tags.shape == (3, 50, 20)")
    assert "tagger.onnx" in written
