"""aarch64 side of the ARM check: run the converted models in a runtime and compare with the float64 reference.

Runs on the target's Python with numpy and one runtime: onnxruntime (+ onnx) through the package's own
`dkp_deploy.runtime`, which loads the ops library with `dkp_deploy.ops`; or tflite-runtime / ai-edge-litert.
No scipy, no torch. Reads `manifest.json` and the `NAME.npz` files written by make_models.py. Prints one
line per model, `PASS`/`FAIL`/`SKIP` first, with the max absolute error and the max error relative to the
output's scale, and exits 1 if any model fails parity (or cannot run).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

Runner = Callable[[dict], dict]


def onnxruntime_runner(path: Path, **options: Any) -> Runner:
    """The package's own deploy path, as on a board: `dkp_deploy.runtime` registers the ops library itself."""
    from dkp_deploy import runtime

    session = runtime.session(path, threads=1, **options)
    return lambda feeds: runtime.run(session, feeds)


def tflite_interpreter_class():
    try:
        from tflite_runtime import interpreter as tfl
    except ImportError:
        from ai_edge_litert import interpreter as tfl
    return tfl


def tflite_runner(path: Path) -> Runner:
    tfl = tflite_interpreter_class()
    # XNNPACK (the default delegate) computes wrong results on sparse weights: builtin kernels only.
    interpreter = tfl.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        num_threads=1,
    )
    inputs = {d["name"]: d for d in interpreter.get_input_details()}

    def run(feeds: dict) -> dict:
        for name, detail in inputs.items():
            if tuple(detail["shape"]) != feeds[name].shape:
                interpreter.resize_tensor_input(detail["index"], feeds[name].shape)
        interpreter.allocate_tensors()
        for name, detail in inputs.items():
            interpreter.set_tensor(detail["index"], feeds[name].astype(detail["dtype"]))
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}

    return run


def compare(outputs: dict, refs: dict) -> tuple[float, float]:
    """(max |out - ref|, max over outputs of max |out - ref| / max |ref|) over every reference output."""
    abs_err = rel_err = 0.0
    for name, ref in refs.items():
        if outputs.get(name) is None:  # onnxruntime hands back None when a kernel never wrote its output
            raise ValueError(f"the runtime returned no value for output {name!r}")
        got = np.asarray(outputs[name], dtype=np.float64)
        if got.shape != ref.shape:
            raise ValueError(f"output {name!r} has shape {got.shape}, the reference {ref.shape}")
        err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        abs_err = max(abs_err, err)
        rel_err = max(rel_err, err / max(float(np.max(np.abs(ref))), 1e-30))
    return abs_err, rel_err


def within(outputs: dict, refs: dict, atol: float, rtol: float) -> bool:
    return all(
        np.all(np.abs(np.asarray(outputs[n], np.float64) - ref) <= atol + rtol * np.abs(ref)) for n, ref in refs.items()
    )


def expect_error(tag: str, entry: dict, models: Path, feeds: dict) -> bool:
    """Run a model fed malformed data: it must raise an error naming entry["expect_error"] (a crash ends us)."""
    want = entry["expect_error"]
    try:
        onnxruntime_runner(models / entry["onnx"], log_severity_level=4)(feeds)  # the error is ours to print
        message = "no error raised"
    except Exception as e:
        message = " ".join(str(e).split())
        if want in message:
            cause = message[message.find(f"'{want}'") :][:110]  # the op's own words, after ORT's preamble
            print(f"PASS {tag:14s} {entry['name']:20s} {entry['label']}: an error, as it must be: {cause}")
            return True
    print(
        f"FAIL {tag:14s} {entry['name']:20s} {entry['label']}: expected an error naming {want!r}, got: {message[:200]}"
    )
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["onnxruntime", "tflite"], required=True)
    parser.add_argument("--models", type=Path, required=True, help="folder written by make_models.py")
    args = parser.parse_args(argv)
    manifest = json.loads((args.models / "manifest.json").read_text())
    atol, rtol = manifest["atol"], manifest["rtol"]
    fmt = "onnx" if args.runtime == "onnxruntime" else "tflite"

    if args.runtime == "onnxruntime":
        import onnxruntime as ort

        from dkp_deploy import ops

        tag, version = "onnxruntime", f"{ort.__version__}, dkp_deploy.ops loads {ops.library_path().name}"
    else:
        tag = tflite_interpreter_class().__name__.split(".")[0]
        version = getattr(sys.modules[tag], "__version__", "")
    print(f"{platform.machine()} Python {platform.python_version()}, numpy {np.__version__}, {tag} {version}")

    entries = [e for e in manifest["models"] if fmt in e]
    if not entries:
        print(f"SKIP {tag:14s} no .{fmt} model at all (its converter is not in dkp_deploy yet)")
        return 0
    failures = 0
    for entry in entries:
        name = entry["name"]
        data = np.load(args.models / entry["data"])
        feeds = {k[3:]: data[k] for k in data.files if k.startswith("in/")}
        refs = {k[4:]: data[k] for k in data.files if k.startswith("ref/")}
        if "expect_error" in entry:
            failures += not expect_error(tag, entry, args.models, feeds)
            continue
        try:
            run = (
                onnxruntime_runner(args.models / entry[fmt])
                if fmt == "onnx"
                else tflite_runner(args.models / entry[fmt])
            )
            outputs = run(feeds)
            abs_err, rel_err = compare(outputs, refs)
            ok = within(outputs, refs, atol, rtol)
        except Exception as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            if len(reason) > 240:  # ORT's messages put the cause last
                reason = f"{reason[:90]} ... {reason[-140:]}"
            print(f"FAIL {tag:14s} {name:20s} did not run: {reason}")
            failures += 1
            continue
        failures += not ok
        print(
            f"{'PASS' if ok else 'FAIL'} {tag:14s} {name:20s} {entry['label']}: "
            f"max abs err {abs_err:.2e}, max rel err {rel_err:.2e} (bound {atol:g} + {rtol:g}|ref|)"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
