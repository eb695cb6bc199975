"""Hostile or broken inputs to the CLIs (issue 14): one stderr line, exit 2, bounded memory, nothing left behind.

Every case runs the real entry point in a subprocess under a 4 GiB address-space limit (RLIMIT_AS), so a case
that tried to allocate what the file declares would die or raise MemoryError instead of passing.
"""

from __future__ import annotations

import resource
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from dkp_deploy.spec import CSR, DopedMatrix, Linear, ModelSpec

torch = pytest.importorskip("torch")

from dkp_deploy.checkpoint import load_spec, save  # noqa: E402
from dkp_deploy.errors import InputError  # noqa: E402

AS_LIMIT = 4 << 30
ENTRY = {"convert": "convert_main", "validate": "validate_main", "bench": "bench_main"}


def _limits(fsize: int | None = None):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
        if fsize is not None:  # a full disk, as the writer sees it: write() fails with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return apply


def _cli(tool: str, *args: str, cwd: Path, fsize: int | None = None) -> subprocess.CompletedProcess:
    code = f"import sys; from dkp_deploy.cli import {ENTRY[tool]} as m; sys.exit(m(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, preexec_fn=_limits(fsize))


def _assert_bad_input(proc: subprocess.CompletedProcess, *words: str) -> str:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _mlp() -> ModelSpec:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 6)).astype(np.float32)
    w[rng.random((8, 6)) < 0.7] = 0
    m = DopedMatrix((8, 6), "kron", {"B": rng.standard_normal((2, 3)).astype(np.float32),
                                      "C": rng.standard_normal((4, 2)).astype(np.float32)}, CSR.from_dense(w))
    return ModelSpec("mlp", [Linear("fc1", m, rng.standard_normal(8).astype(np.float32))], {}, {})


def _huge(path: Path, m: int, n: int) -> Path:
    """A small checkpoint declaring an m x n sparse-only layer with one nonzero."""
    row_ptr = np.zeros(m + 1, np.int32)
    row_ptr[1:] = 1
    sparse = CSR((m, n), row_ptr, np.array([n - 1], np.int32), np.ones(1, np.float32))
    save(ModelSpec("mlp", [Linear("big", DopedMatrix((m, n), "none", {}, sparse), None)], {}, {}), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.pt"
    save(_mlp(), good)
    raw = torch.load(good, weights_only=True)
    raw["blocks"][0]["bias"] = torch.empty(8, device="meta")
    torch.save(raw, d / "meta.pt")
    out = {"good": good, "meta": d / "meta.pt", "wide": _huge(d / "wide.pt", 2, 2**31 - 2),
           "tall": _huge(d / "tall.pt", 2_000_000, 1000)}
    try:
        from dkp_deploy.converters import to_tflite

        to_tflite(good, d / "good.tflite", quiet=True)
        data = (d / "good.tflite").read_bytes()
        (d / "cut.tflite").write_bytes(data[: len(data) * 99 // 100])
        out["cut"] = d / "cut.tflite"
    except ImportError:
        pass
    return out


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_meta_tensors(files, tmp_path) -> None:
    _assert_bad_input(_cli("convert", str(files["meta"]), "-o", "m.onnx", cwd=tmp_path), "meta.pt")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("case, layer", [("wide", "2 x 2147483646"), ("tall", "2000000 x 1000")])
@pytest.mark.parametrize("tool", ["convert", "validate"])
def test_declared_huge_matrix_is_refused_before_allocating(files, tmp_path, case, layer, tool) -> None:
    args = ["-o", "x.onnx"] if tool == "convert" else [str(files["good"].with_suffix(".onnx"))]
    line = _assert_bad_input(_cli(tool, str(files[case]), *args, cwd=tmp_path), "'big'", layer, "--max-memory")
    assert "GiB" in line
    assert _leftovers(tmp_path) == []


def test_max_memory_flag_lowers_the_limit(files, tmp_path) -> None:
    _assert_bad_input(_cli("convert", str(files["good"]), "-o", "x.onnx", "--max-memory", "100", cwd=tmp_path),
                      "limit")
    with pytest.raises(InputError, match="over the 100 bytes limit"):
        load_spec(files["good"], max_memory=100)


def test_disk_full_while_writing(files, tmp_path) -> None:
    _assert_bad_input(_cli("convert", str(files["good"]), "-o", "x.onnx", "--sparse-impl", "portable",
                           cwd=tmp_path, fsize=512), "x.onnx")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("args, words", [
    (["validate", "{good}", "{good}", "--seed", "-1"], ["--seed"]),
    (["convert", "{good}", "-o", "-"], ["stdout"]),
    (["convert", "{good}", "-o", "."], ["directory"]),
    (["convert", "{good}", "-o", "a\nb.onnx"], ["newline"]),
    (["convert", "no\nsuch.pt", "-o", "x.onnx"], ["no\\nsuch.pt", "no such file"]),
    (["convert", "{good}", "-o", "x.onnx", "--bogus"], ["--bogus"]),
    (["bench", "--threads", "x"], ["--threads"]),
])
def test_one_line_argument_and_path_errors(files, tmp_path, args, words) -> None:
    tool, *rest = args
    rest = [a.format(good=files["good"]) for a in rest]
    _assert_bad_input(_cli(tool, *rest, cwd=tmp_path), *words)
    assert _leftovers(tmp_path) == []


def test_truncated_tflite(files, tmp_path) -> None:
    if "cut" not in files:
        pytest.skip("needs the tflite extra")
    _assert_bad_input(_cli("validate", str(files["good"]), str(files["cut"]), cwd=tmp_path), "cut.tflite")


def _deflated_zeros(zf: zipfile.ZipFile, name: str, header: bytes, size: int) -> None:
    """A member of `size` zero bytes after `header`, deflated chunk by chunk (never `size` bytes in memory)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    d = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(d) + 1) % 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d) + pad + 1) + d + b" " * pad + b"\n"


@pytest.mark.parametrize("name, shape", [("bogus", (64,)), ("x", (1 << 30, 2, 8))])
def test_npz_is_checked_from_headers_before_decompressing(files, tmp_path, name, shape) -> None:
    onnx_path = tmp_path / "m.onnx"
    from dkp_deploy.converters import to_onnx

    to_onnx(files["good"], onnx_path, sparse_impl="portable", quiet=True)
    npz = tmp_path / "f.npz"
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as zf:
        _deflated_zeros(zf, f"{name}.npy", _npy_header(shape), 64 << 20)
    assert npz.stat().st_size < 1 << 20 and zlib  # tiny on disk, large inflated
    _assert_bad_input(_cli("validate", str(files["good"]), str(onnx_path), "--inputs", str(npz), cwd=tmp_path),
                      "f.npz", "inputs")


def test_json_errors(files, tmp_path) -> None:
    import json

    proc = _cli("convert", str(tmp_path / "missing.pt"), "-o", "x.onnx", "--json", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert json.loads(proc.stdout) == {"error": proc.stderr.strip().removeprefix("dkp-convert: error: "),
                                       "exit_code": 2}
    proc = _cli("convert", str(files["good"]), "-o", "y.onnx", "--json", "--sparse-impl", "portable", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["output"] == "y.onnx" and summary["bytes"] == (tmp_path / "y.onnx").stat().st_size


def _hostile_onnx(good: Path, d: Path, case: str) -> Path:
    """A converted file altered as the audit altered it: a forged dkp.layers shape (plain, and with kron factors that
    do make 90000 x 90000), an initializer's raw_data cut by 4 bytes, an initializer declaring [2^31, 2^31]."""
    import json

    import onnx
    from onnx import helper, numpy_helper

    from dkp_deploy.converters import to_onnx

    model = onnx.load(str(to_onnx(good, d / "src.onnx", sparse_impl="portable", quiet=True)))
    meta = {p.key: p.value for p in model.metadata_props}
    layers = json.loads(meta["dkp.layers"])
    biggest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    if case == "metadata_shape":
        layers["fc1"]["shape"] = [90000, 90000]
    elif case == "metadata_kron":
        rng = np.random.default_rng(0)
        model.graph.initializer.extend(
            numpy_helper.from_array(rng.standard_normal((300, 300)).astype(np.float32), n) for n in ("bB", "bC_T"))
        layers["fc1"] = {**layers["fc1"], "shape": [90000, 90000], "tensors": {"B": "bB", "C_T": "bC_T"}}
    elif case == "cut_raw_data":
        biggest.raw_data = biggest.raw_data[:-4]
    else:
        del biggest.dims[:]
        biggest.dims.extend([2**31, 2**31])
    helper.set_model_props(model, {**meta, "dkp.layers": json.dumps(layers)})
    (d / "src.onnx").unlink()
    path = d / f"{case}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case, words", [
    ("metadata_shape", ["90000 x 90000", "limit"]), ("metadata_kron", ["90000 x 90000", "limit"]),
    ("cut_raw_data", ["need", "bytes, the file holds"]), ("huge_dims", ["[2147483648, 2147483648]"]),
])
def test_hostile_onnx_files_in_dkp_validate(files, tmp_path, case, words) -> None:
    d = tmp_path / "in"
    d.mkdir()
    path = _hostile_onnx(files["good"], d, case)
    work = tmp_path / "work"
    work.mkdir()
    _assert_bad_input(_cli("validate", str(files["good"]), str(path), cwd=work), path.name, *words)
    assert _leftovers(work) == []
