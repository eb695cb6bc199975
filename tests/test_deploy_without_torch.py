"""The deploy side (read a checkpoint, convert, validate, run) works in a process where torch cannot import."""

import json
import subprocess
import sys

import _onnx_models as models
import pytest

pytest.importorskip("torch")  # only to write the checkpoint in this process
from dkp_deploy.checkpoint import save  # noqa: E402

# Runs in a child: make `import torch` fail, do the deploy-side work, report whether torch got imported anyway.
CHILD = r"""
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from dkp_deploy.cli import convert_main, validate_main
ckpt, out_dir = sys.argv[1], sys.argv[2]
codes = {}
for name, argv in {
    "onnx_custom": [ckpt, "-o", f"{out_dir}/m.onnx", "--mode", "step", "-q"],
    "onnx_portable_seq": [ckpt, "-o", f"{out_dir}/p.onnx", "--sparse-impl", "portable", "-q"],
    "tflite": [ckpt, "-o", f"{out_dir}/m.tflite", "-q"],
}.items():
    codes["convert_" + name] = convert_main(argv)
for name in ("m.onnx", "p.onnx", "m.tflite"):
    codes["validate_" + name] = validate_main([ckpt, f"{out_dir}/{name}", "--json"])
loaded = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("RESULT " + json.dumps({"codes": codes, "torch_modules": [m for m in loaded if sys.modules[m] is not None]}))
"""


def test_convert_and_validate_without_torch(tmp_path) -> None:
    ckpt = tmp_path / "lm.pt"
    save(models.lstm_lm(), ckpt)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(ckpt), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(line[len("RESULT ") :])
    assert result["torch_modules"] == []
    assert all(code == 0 for code in result["codes"].values()), (result, proc.stderr[-2000:])
