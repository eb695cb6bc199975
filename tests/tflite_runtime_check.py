"""Parity of saved .tflite artifacts on a bare TFLite runtime: numpy + tflite_runtime only (no dkp_deploy, no torch).

Usage: python tflite_runtime_check.py DIR

For every DIR/NAME.tflite there is DIR/NAME.npz holding the feeds as ``in__<input>`` and the float64 reference
outputs as ``out__<output>`` (tests/test_tflite_runtime.py writes them). Each model is loaded with
BUILTIN_WITHOUT_DEFAULT_DELEGATES, run through its SignatureDef, and every output compared:
error = max |out - ref| / max(1, max |ref|) <= TOL. Exit 0 when all pass, 1 when any fails, 2 on bad usage.
This is what a device with an older Python (e.g. a Raspberry Pi with tflite-runtime 2.14) runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

try:
    from tflite_runtime.interpreter import Interpreter, OpResolverType
except ImportError:  # the same API under its new name
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

TOL = 1e-5


def check(model: Path) -> list[str]:
    """Problems found for one model (empty when it passes)."""
    with np.load(model.with_suffix(".npz")) as z:
        feeds = {k[4:]: z[k] for k in z.files if k.startswith("in__")}
        refs = {k[5:]: z[k] for k in z.files if k.startswith("out__")}
    interp = Interpreter(model_path=str(model), num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = interp.get_signature_runner()
    details = runner.get_input_details()
    out = runner(**{k: np.ascontiguousarray(v, dtype=details[k]["dtype"]) for k, v in feeds.items()})
    problems = []
    for name, ref in refs.items():
        got = np.asarray(out.get(name), dtype=np.float64)
        if got.shape != ref.shape:
            problems.append(f"{name}: shape {got.shape}, expected {ref.shape}")
            continue
        err = float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))
        if not err <= TOL:
            problems.append(f"{name}: error {err:.3g} > {TOL:g}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    models = sorted(Path(argv[0]).glob("*.tflite"))
    if not models:
        print(f"{argv[0]}: no .tflite files", file=sys.stderr)
        return 2
    failed = 0
    for model in models:
        problems = check(model)
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {model.name}" + "".join(f"\n     {p}" for p in problems))
    print(f"{len(models) - failed}/{len(models)} models within {TOL:g} ({Interpreter.__module__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
