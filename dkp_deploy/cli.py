"""Command-line entry points: `dkp-convert`, `dkp-validate`, `dkp-bench`.

Exit codes: 0 success; 1 validation failed (dkp-validate), a missing op library, or an unexpected internal
error; 2 bad input (missing / malformed / unknown file, unwritable output, bad arguments). Errors are one line
on stderr, "<prog>: error: <message>"; `--debug` shows the traceback of an unexpected error instead. A failed
conversion leaves no output file behind (the converters write to a temporary file and rename it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import DkpError, InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
TARGETS = {".onnx": "onnx", ".tflite": "tflite"}


def _run(prog: str, debug: bool, body: Callable[[], int]) -> int:
    """Run `body`, turning every error into one stderr line and an exit code."""
    try:
        return body()
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DkpError as e:  # deliberate, already clear: e.g. the op library is not built, validation failed
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        msg = " ".join(str(e).split()) or "no message"
        print(f"{prog}: error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


class _Parser(argparse.ArgumentParser):
    """argparse with the package's error style: one line on stderr (no usage block), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=description)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    return p


def convert_main(argv: Sequence[str] | None = None) -> int:
    from .converters.onnx import DEFAULT_OPSET, OPSETS, SPARSE_IMPLS
    from .signature import MODES

    p = _parser("dkp-convert", "Convert a doped model checkpoint to ONNX or TFLite.")
    p.add_argument("model", help="checkpoint written by dkp_deploy.save (.pt)")
    p.add_argument("-o", "--output", required=True, help="output file: .onnx or .tflite")
    p.add_argument("--target", choices=sorted(set(TARGETS.values())), help="output format (default: from -o)")
    p.add_argument("--sparse-impl", choices=SPARSE_IMPLS, default=None,
                   help="ONNX only: how W_s runs (custom: ai.dkp::SparseMatVec; portable: standard ops; "
                        "dense: folded W, the baseline). Default: custom")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="recurrent models: sequence (Scan over time) or step (one time step). "
                        "Default: sequence for ONNX, step for TFLite")
    p.add_argument("--opset", type=int, choices=OPSETS, default=None, metavar="N",
                   help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary line")
    args = p.parse_args(argv)

    def body() -> int:
        out = Path(args.output)
        target = args.target or TARGETS.get(out.suffix.lower())
        if target is None:
            raise InputError("cannot tell the format from the extension: use .onnx or .tflite, or --target", out)
        if out.exists() and out.resolve() == Path(args.model).resolve():
            raise InputError("the output would overwrite the input checkpoint", out)
        if target == "onnx":
            from .converters import to_onnx

            impl = args.sparse_impl or "custom"
            written = to_onnx(args.model, out, sparse_impl=impl, mode=args.mode or "sequence",
                              opset=args.opset or DEFAULT_OPSET, quiet=args.quiet)
            detail = f"onnx, sparse-impl {impl}, mode {args.mode or 'sequence'}"
        else:
            ignored = [flag for flag, value in (("--sparse-impl", args.sparse_impl), ("--opset", args.opset)) if value]
            if ignored:
                raise InputError(f"{' and '.join(ignored)} apply to ONNX only, not to a .tflite target", out)
            from .converters import to_tflite

            written = to_tflite(args.model, out, mode=args.mode or "step", quiet=args.quiet)
            detail = f"tflite, mode {args.mode or 'step'}"
        if not args.quiet:
            size = Path(written).stat().st_size
            print(f"dkp-convert: wrote {written} ({size / 1024:.1f} KiB, {detail})")
        return EXIT_OK

    return _run("dkp-convert", args.debug, body)


def validate_main(argv: Sequence[str] | None = None) -> int:
    p = _parser("dkp-validate", "Check that an exported .onnx / .tflite computes what its checkpoint computes.")
    p.add_argument("model", help="checkpoint written by dkp_deploy.save (.pt)")
    p.add_argument("exported", help="the converted file (.onnx or .tflite)")
    p.add_argument("--inputs", help=".npz of input arrays named as the graph's inputs, checked too")
    p.add_argument("--rtol-layer", type=_tolerance, default=1e-5,
                   help="per layer: max |W_file - W| / max |W| (default 1e-5)")
    p.add_argument("--atol", type=_tolerance, default=1e-4,
                   help="end to end: max |out - ref| / max(1, max |ref|) per output (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for CI)")
    args = p.parse_args(argv)

    def body() -> int:
        from .validate import validate

        report = validate(args.model, args.exported, inputs=args.inputs, rtol_layer=args.rtol_layer,
                          atol_e2e=args.atol, seed=args.seed)
        print(report.to_json(indent=2) if args.json else report.table())
        return EXIT_OK if report.passed else EXIT_FAILED

    return _run("dkp-validate", args.debug, body)


def bench_main(argv: Sequence[str] | None = None) -> int:
    from .bench.cli import main

    return main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(convert_main())
