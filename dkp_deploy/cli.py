"""Command-line entry points: `dkp-convert`, `dkp-validate`, `dkp-bench`.

Exit codes: 0 success; 1 validation failed (dkp-validate), a missing op library, or an unexpected internal
error; 2 bad input (missing / malformed / unknown / too large file, unwritable output or full disk, a missing
extra, bad arguments). Errors are one line on stderr, "<prog>: error: <message>" (control characters escaped),
and with --json also `{"error": ..., "exit_code": ...}` on stdout; `--debug` shows the traceback of an
unexpected error instead. Every tool shares --version, --quiet, --verbose, --json and --debug. A failed
conversion leaves no output file behind (the converters write to a temporary file and rename it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import __version__
from .errors import DkpError, InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
TARGETS = {".onnx": "onnx", ".tflite": "tflite"}


# The Python package a missing import belongs to -> the extra that installs it.
_EXTRAS = {"tflite": "tflite", "flatbuffers": "tflite", "ai_edge_litert": "tflite", "torch": "torch",
           "matplotlib": "bench", "threadpoolctl": "bench"}


def one_line(text: object) -> str:
    """`text` as one line: newlines and other control characters escaped, so an error stays one stderr line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def report_error(prog: str, message: str, code: int, as_json: bool) -> int:
    """Print one error line (stderr), and with --json the same error as a JSON object on stdout; return `code`."""
    message = one_line(message)
    print(f"{prog}: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
    return code


def _run(prog: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run `body`, turning every error into one stderr line (and a JSON object with --json) and an exit code."""
    as_json = bool(getattr(args, "json", False))
    try:
        return body()
    except InputError as e:
        return report_error(prog, str(e), EXIT_BAD_INPUT, as_json)
    except DkpError as e:  # deliberate, already clear: e.g. the op library is not built, validation failed
        return report_error(prog, " ".join(str(e).split()), EXIT_FAILED, as_json)
    except ModuleNotFoundError as e:
        extra = _EXTRAS.get((e.name or "").split(".")[0])
        if extra is None and not args.debug:
            return report_error(prog, f"ModuleNotFoundError: {e}", EXIT_FAILED, as_json)
        if extra is None:
            raise
        return report_error(prog, f"this needs the Python package {e.name!r}: install dkp-deploy[{extra}]",
                            EXIT_BAD_INPUT, as_json)
    except MemoryError:  # a backstop: sizes are checked against --max-memory before allocating
        return report_error(prog, "out of memory (a tensor in the input is too large for this machine)",
                            EXIT_BAD_INPUT, as_json)
    except OSError as e:  # disk full, permission denied, ... while reading or writing a file
        where = f"{e.filename}: " if e.filename else ""
        return report_error(prog, f"{where}{e.strerror or e}", EXIT_BAD_INPUT, as_json)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or "no message"
        return report_error(prog, f"{type(e).__name__}: {msg} (rerun with --debug for the traceback)", EXIT_FAILED,
                            as_json)


class Parser(argparse.ArgumentParser):
    """argparse with the package's error style: one line on stderr (no usage block), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see --help)\n")


_Parser = Parser  # the old private name


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:  # numpy's SeedSequence accepts no negative seed
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**32-1, got {text!r}")
    return value


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def memory_size(text: str) -> int:
    """A byte count such as 4G, 512M or 1000000 (argparse type of --max-memory)."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a size > 0 such as 4G, 512M or 1000000, got {text!r}")
    return int(value * _UNITS[unit])


def output_path(text: str) -> Path:
    """-o's value checked up front: a file name, not stdout ('-'), a directory or a name with a newline."""
    if text == "-":
        raise InputError("cannot write to stdout ('-'): give an output file name")
    if any(c in text for c in "\n\r\0"):
        raise InputError("output path contains a newline or NUL character", text)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise InputError("output path is a directory: give a file name", text)
    return path


def add_common(p: argparse.ArgumentParser, *, json_help: str) -> None:
    """The flags every dkp-* tool shares."""
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    level.add_argument("--verbose", "-v", action="store_true", help="print more detail (timings) on stderr")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")


def _parser(prog: str, description: str, json_help: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=description)
    add_common(p, json_help=json_help)
    return p


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A write error without a file name (disk full, file too large) names the output instead."""
    try:
        yield
    except OSError as e:
        if e.filename or isinstance(e, DkpError):
            raise
        raise InputError(f"cannot write the output: {e.strerror or e}", out) from None


def _add_max_memory(p: argparse.ArgumentParser) -> None:
    from .checkpoint import DEFAULT_MAX_MEMORY

    p.add_argument("--max-memory", type=memory_size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                   help=f"refuse a checkpoint whose tensors would need more memory than this "
                        f"(default {DEFAULT_MAX_MEMORY >> 30}G)")


def convert_main(argv: Sequence[str] | None = None) -> int:
    from .converters.onnx import DEFAULT_OPSET, OPSETS, SPARSE_IMPLS
    from .quantize import QUANTIZE_MODES
    from .signature import MODES

    p = _parser("dkp-convert", "Convert a doped model checkpoint to ONNX or TFLite.",
                "print a JSON summary of what was written (errors too, as {\"error\", \"exit_code\"}) on stdout")
    p.add_argument("model", help="checkpoint written by dkp_deploy.save (.pt), a hub written by "
                                 "dkp_deploy.export(..., sparse_impl='hub') (.onnx, no torch needed) or a program "
                                 "from dkp_deploy.export.program saved with torch.export.save (.pt2)")
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
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                   help="ONNX custom / portable only: store the doped matrices in int8 (one scale per row). int8: "
                        "weights only, activations stay float32; int8-dynamic: also each doped matrix's input, "
                        "quantized to uint8 at run time (DynamicQuantizeLinear)")
    _add_max_memory(p)
    args = p.parse_args(argv)

    def body() -> int:
        from .checkpoint import max_memory

        out = output_path(args.output)
        target = args.target or TARGETS.get(out.suffix.lower())
        if target is None:
            raise InputError("cannot tell the format from the extension: use .onnx or .tflite, or --target", out)
        if out.exists() and out.resolve() == Path(args.model).resolve():
            raise InputError("the output would overwrite the input checkpoint", out)
        quiet = args.quiet or args.json  # stdout holds only the JSON summary then
        if args.quantize and (target == "tflite" or args.sparse_impl == "dense"):
            raise InputError(f"--quantize applies to ONNX with --sparse-impl custom or portable, not to "
                             f"{'a .tflite target' if target == 'tflite' else '--sparse-impl dense'}", out)
        t0 = time.perf_counter()
        general = Path(args.model).suffix.lower() in (".onnx", ".pt2")
        if general:  # the general path: a hub, or a torch.export program, lowered for the target
            if target == "tflite" and (args.sparse_impl or args.opset):
                raise InputError("--sparse-impl and --opset apply to ONNX only, not to a .tflite target", out)
            from .export import DEFAULT_OPSET as HUB_OPSET
            from .export import convert

            if args.opset and Path(args.model).suffix.lower() == ".onnx":
                raise InputError("--opset does not apply to a hub (its opset was fixed when it was exported)", out)
            impl = args.sparse_impl or "custom"
            with _writing(out):
                written = convert(args.model, out, sparse_impl=impl, opset=args.opset or HUB_OPSET,
                                  quantize=args.quantize)
            summary = {"target": target, "mode": args.mode or "sequence"}
            if target == "onnx":
                summary["sparse_impl"] = impl
        elif target == "onnx":
            from .converters import to_onnx

            impl = args.sparse_impl or "custom"
            with max_memory(args.max_memory), _writing(out):
                written = to_onnx(args.model, out, sparse_impl=impl, mode=args.mode or "sequence",
                                  opset=args.opset or DEFAULT_OPSET, quiet=quiet, quantize=args.quantize)
            summary = {"target": "onnx", "sparse_impl": impl, "mode": args.mode or "sequence",
                       "opset": args.opset or DEFAULT_OPSET}
        else:
            ignored = [flag for flag, value in (("--sparse-impl", args.sparse_impl), ("--opset", args.opset)) if value]
            if ignored:
                raise InputError(f"{' and '.join(ignored)} apply to ONNX only, not to a .tflite target", out)
            try:
                from .converters import tflite as _tflite_converter  # noqa: F401  (needs the tflite extra)
            except ModuleNotFoundError as e:
                raise InputError(f"the TFLite converter needs the Python package {e.name!r}: "
                                 "install dkp-deploy[tflite]") from None
            from .converters import to_tflite

            with max_memory(args.max_memory), _writing(out):
                written = to_tflite(args.model, out, mode=args.mode or "step", quiet=quiet)
            summary = {"target": "tflite", "mode": args.mode or "step"}
        size = Path(written).stat().st_size
        if args.quantize:
            summary["quantize"] = args.quantize
        summary = {"output": str(written), "bytes": size, **summary, "source": str(args.model),
                   "seconds": round(time.perf_counter() - t0, 3)}
        if args.json:
            print(json.dumps(summary))
        elif not args.quiet:
            detail = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in summary.items()
                               if k in ("sparse_impl", "mode", "quantize"))
            print(f"dkp-convert: wrote {one_line(written)} ({size / 1024:.1f} KiB, {summary['target']}, {detail})")
        if args.verbose:
            print(f"dkp-convert: {summary['seconds']:.2f} s", file=sys.stderr)
        return EXIT_OK

    return _run("dkp-convert", args, body)


def validate_main(argv: Sequence[str] | None = None) -> int:
    from .validate import INT8_DYNAMIC_ATOL

    p = _parser("dkp-validate", "Check that an exported .onnx / .tflite computes what its checkpoint computes.",
                "print the report as JSON (for CI); errors too, as {\"error\", \"exit_code\"}")
    p.add_argument("model", help="checkpoint written by dkp_deploy.save (.pt), or the hub (.onnx) a file was "
                                 "lowered from (checked in float64 with onnx.reference, no torch needed)")
    p.add_argument("exported", help="the converted file (.onnx or .tflite)")
    p.add_argument("--inputs", help=".npz of input arrays named as the graph's inputs, checked too")
    p.add_argument("--rtol-layer", type=_tolerance, default=1e-5,
                   help="per layer: max |W_file - W| / max |W| (default 1e-5)")
    p.add_argument("--atol", type=_tolerance, default=None,
                   help="end to end: max |out - ref| / max(1, max |ref|) per output (default 1e-4; "
                        f"{INT8_DYNAMIC_ATOL:g} for an int8-dynamic file)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs (default 0)")
    _add_max_memory(p)
    args = p.parse_args(argv)

    def body() -> int:
        from .checkpoint import max_memory
        from .validate import validate

        t0 = time.perf_counter()
        if Path(args.model).suffix.lower() == ".onnx":
            from .export import load_hub
            from .validate import validate_export

            if args.inputs:
                raise InputError("--inputs applies to a checkpoint source, not a hub", args.model)
            hub = load_hub(args.model)
            report = validate_export(args.exported, hub=hub, rtol_layer=args.rtol_layer, atol_e2e=args.atol,
                                     seed=args.seed)
            report.source = str(args.model)
        else:
            with max_memory(args.max_memory):
                report = validate(args.model, args.exported, inputs=args.inputs, rtol_layer=args.rtol_layer,
                                  atol_e2e=args.atol, seed=args.seed)
        if args.json:
            print(report.to_json(indent=2))
        elif not args.quiet:
            print(report.table())
        if args.verbose:
            print(f"dkp-validate: {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        return EXIT_OK if report.passed else EXIT_FAILED

    return _run("dkp-validate", args, body)


def bench_main(argv: Sequence[str] | None = None) -> int:
    from .bench.cli import main

    return main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(convert_main())
