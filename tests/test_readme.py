"""The README's Python usage example runs as printed (in a scratch directory)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "to_onnx(" in b and "assert_parity(" in b)
    script = tmp_path / "example.py"
    script.write_text(example + '\nassert out["y"].shape == (37, 1, 128) and out["hn"].shape == (2, 1, 128)\n')
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert {"lstm.pt", "lstm.onnx", "lstm.tflite"} <= {p.name for p in tmp_path.iterdir()}


def test_readme_export_example_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "dkp_deploy.export(" in b and "assert_parity(" in b)
    script = tmp_path / "example.py"
    script.write_text(example + '\nassert tags.shape == (3, 50, 20)\n')
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "tagger.onnx").is_file()
