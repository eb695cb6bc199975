"""dkp-convert / dkp-validate / dkp-bench entry points: exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _onnx_models import lstm_lm, mlp

from dkp_deploy import cli
from dkp_deploy.converters import onnx as onnx_converter


def _one_error_line(err: str, prog: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def checkpoint(tmp_path):
    """Writes a spec as a checkpoint with dkp_deploy.checkpoint.save."""
    from dkp_deploy.checkpoint import save

    def write(spec, name="model.pt"):
        save(spec, tmp_path / name)
        return tmp_path / name

    return write


def _tampered(src, dst, change):
    """A copy of checkpoint `src` whose payload dict went through `change` (what a newer / broken writer makes)."""
    torch = pytest.importorskip("torch")
    payload = torch.load(src, weights_only=True)
    change(payload)
    torch.save(payload, dst)
    return dst


def test_argparse_errors_exit_2(tmp_path, capsys):
    bad = [[], ["m.pt"], ["m.pt", "-o", "x.onnx", "--sparse-impl", "csr"], ["m.pt", "-o", "x.onnx", "--mode", "x"],
           ["m.pt", "-o", "x.onnx", "--opset", "11"]]
    for argv in bad:
        with pytest.raises(SystemExit) as e:
            cli.convert_main(argv)
        assert e.value.code == 2, argv
        _one_error_line(capsys.readouterr().err, "dkp-convert")
    for argv in (["only-one-arg"], ["m.pt", "m.onnx", "--atol", "-1"], ["m.pt", "m.onnx", "--rtol-layer", "x"]):
        with pytest.raises(SystemExit) as e:
            cli.validate_main(argv)
        assert e.value.code == 2, argv
        _one_error_line(capsys.readouterr().err, "dkp-validate")


def test_unknown_extension_exit_2(tmp_path, capsys):
    assert cli.convert_main([str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.bin")]) == 2
    _one_error_line(capsys.readouterr().err, "dkp-convert")
    assert not (tmp_path / "m.bin").exists()


def test_unexpected_error_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr("dkp_deploy.converters.to_onnx", boom)
    argv = [str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx")]
    assert cli.convert_main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: kaboom second line" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        cli.convert_main([*argv, "--debug"])


def test_bench_main_delegates(monkeypatch):
    seen = []
    monkeypatch.setattr("dkp_deploy.bench.cli.main", lambda argv: seen.append(argv) or 0)
    assert cli.bench_main(["--quick"]) == 0 and seen == [["--quick"]]


def test_convert_and_validate_round_trip(tmp_path, capsys, checkpoint):
    ckpt = checkpoint(mlp())
    out = tmp_path / "m.onnx"
    assert cli.convert_main([str(ckpt), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.exists()
    assert cli.validate_main([str(ckpt), str(out)]) == 0
    assert "PASSED" in capsys.readouterr().out
    meta = onnx_converter.load_exported(out).metadata
    from dkp_deploy.fileio import sha256_file

    assert meta["dkp.source_sha256"] == sha256_file(ckpt)


def test_lm_step_portable_json(tmp_path, capsys, checkpoint):
    ckpt = checkpoint(lstm_lm())
    out = tmp_path / "lm.onnx"
    args = [str(ckpt), "-o", str(out), "--mode", "step", "--sparse-impl", "portable", "--quiet"]
    assert cli.convert_main(args) == 0
    assert capsys.readouterr().out == ""
    assert cli.validate_main([str(ckpt), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["mode"] == "step"


def test_validate_exit_1_on_altered_file(tmp_path, capsys, checkpoint):
    import onnx
    from onnx import numpy_helper

    ckpt = checkpoint(mlp())
    out = tmp_path / "m.onnx"
    assert cli.convert_main([str(ckpt), "-o", str(out), "-q"]) == 0
    model = onnx.load(str(out))
    t = next(t for t in model.graph.initializer if t.name.endswith("W_s/values"))
    a = numpy_helper.to_array(t).copy()
    a[0] += 1e-3
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    assert cli.validate_main([str(ckpt), str(tmp_path / "bad.onnx")]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_bad_inputs_exit_2_no_output(tmp_path, capsys, checkpoint, suffix):
    good = checkpoint(mlp())
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:2000])

    def factors(p):
        return p["blocks"][0]["weight"]["factors"]

    def sparse(p):
        return p["blocks"][0]["weight"]["W_s"]

    inputs = {
        "missing file": tmp_path / "missing.pt",
        "not a checkpoint": tmp_path / "junk.pt",
        "truncated": tmp_path / "truncated.pt",
        "newer version": _tampered(good, tmp_path / "newer.pt", lambda p: p.update(version=p["version"] + 1)),
        "unknown architecture": _tampered(good, tmp_path / "gru.pt", lambda p: p.update(arch="gru")),
        "nan weights": _tampered(good, tmp_path / "nan.pt", lambda p: factors(p)["B"].fill_(float("nan"))),
        "inf bias": _tampered(good, tmp_path / "inf.pt", lambda p: p["blocks"][0]["bias"].fill_(float("-inf"))),
        "factor shapes": _tampered(good, tmp_path / "b.pt", lambda p: factors(p).update(B=factors(p)["B"][:, :1])),
        "csr arrays": _tampered(good, tmp_path / "csr.pt", lambda p: sparse(p).update(values=sparse(p)["values"][1:])),
        "a directory": tmp_path,
    }
    outputs = {"unwritable output dir": tmp_path / "no" / "such" / f"o{suffix}", "output is a directory": tmp_path}
    assert cli.convert_main([str(good), "-o", str(good), "--target", suffix[1:]]) == 2  # would overwrite the input
    _one_error_line(capsys.readouterr().err, "dkp-convert")
    assert good.read_bytes()[:2] == b"PK"
    cases = [(label, src, tmp_path / f"o{suffix}") for label, src in inputs.items()]
    cases += [(label, good, out) for label, out in outputs.items()]
    for label, src, out in cases:
        assert cli.convert_main([str(src), "-o", str(out)]) == 2, label
        err = capsys.readouterr().err
        _one_error_line(err, "dkp-convert")
        assert f"{src.name if label in inputs else out}:" in err, (label, err)  # names the file
        assert not (tmp_path / f"o{suffix}").exists(), label
        assert not list(tmp_path.glob(".o*")), label
    for label, src in inputs.items():
        assert cli.validate_main([str(src), str(tmp_path / f"x{suffix}")]) == 2, label
        _one_error_line(capsys.readouterr().err, "dkp-validate")
    assert cli.validate_main([str(good), str(tmp_path / f"missing{suffix}")]) == 2
    _one_error_line(capsys.readouterr().err, "dkp-validate")


def test_console_scripts_installed(tmp_path):
    """The installed entry point runs and reports bad input without a traceback."""
    exe = __import__("pathlib").Path(sys.executable).with_name("dkp-convert")
    if not exe.exists():
        pytest.skip("console scripts not installed in this environment (pip install -e .)")
    r = subprocess.run([str(exe), str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.txt")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_note_when_file_came_from_another_checkpoint(tmp_path, capsys, checkpoint):
    spec = mlp()
    first = checkpoint(spec, "a.pt")
    spec.metadata["retrained"] = True  # same weights, different file
    second = checkpoint(spec, "b.pt")
    out = tmp_path / "m.onnx"
    assert cli.convert_main([str(first), "-o", str(out), "-q"]) == 0
    assert cli.validate_main([str(second), str(out)]) == 0
    assert "different source checkpoint" in capsys.readouterr().out
    assert cli.validate_main([str(first), str(out)]) == 0
    assert "note:" not in capsys.readouterr().out


def test_tflite_target(tmp_path, capsys, checkpoint):
    """.tflite (or --target tflite) goes to the TFLite converter; dkp-validate runs it in the TFLite interpreter."""
    pytest.importorskip("dkp_deploy.converters.tflite")
    if not any(__import__("importlib").util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime")):
        pytest.skip("no TFLite interpreter installed")
    ckpt = checkpoint(lstm_lm())
    out = tmp_path / "lm.tflite"
    assert cli.convert_main([str(ckpt), "-o", str(out), "-q"]) == 0
    assert cli.validate_main([str(ckpt), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "tflite" and report["mode"] == "step" and report["passed"]
    other = tmp_path / "lm.bin"
    assert cli.convert_main([str(ckpt), "-o", str(other), "--target", "tflite", "-q"]) == 0
    assert other.read_bytes()[4:8] == b"TFL3"
    assert cli.convert_main([str(ckpt), "-o", str(tmp_path / "seq.tflite"), "--mode", "sequence", "-q"]) == 0
    assert cli.validate_main([str(ckpt), str(tmp_path / "seq.tflite"), "--json"]) == 0  # a WHILE over T
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "sequence" and report["passed"]
    for flags in (["--sparse-impl", "portable"], ["--opset", "18"]):  # ONNX-only options are not silently dropped
        assert cli.convert_main([str(ckpt), "-o", str(tmp_path / "opt.tflite"), *flags]) == 2
        assert "ONNX only" in _one_error_line(capsys.readouterr().err, "dkp-convert")
        assert not (tmp_path / "opt.tflite").exists()


def test_validate_user_inputs(tmp_path, capsys, checkpoint):
    import numpy as np

    from dkp_deploy import signature

    spec = lstm_lm()
    ckpt = checkpoint(spec)
    out = tmp_path / "lm.onnx"
    assert cli.convert_main([str(ckpt), "-o", str(out), "-q"]) == 0
    np.savez(tmp_path / "in.npz", **signature.random_feeds(spec, time=7, batch=3, seed=9))
    assert cli.validate_main([str(ckpt), str(out), "--inputs", str(tmp_path / "in.npz")]) == 0
    assert "user: y" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", y=np.zeros(3))
    assert cli.validate_main([str(ckpt), str(out), "--inputs", str(tmp_path / "bad.npz")]) == 2
    _one_error_line(capsys.readouterr().err, "dkp-validate")


def test_missing_op_library_is_one_line_exit_1(tmp_path, capsys, checkpoint, monkeypatch):
    ckpt = checkpoint(mlp())
    out = tmp_path / "m.onnx"
    assert cli.convert_main([str(ckpt), "-o", str(out), "-q"]) == 0
    monkeypatch.setenv("DKP_OPS_LIBRARY", str(tmp_path / "missing.so"))
    assert cli.validate_main([str(ckpt), str(out)]) == 1
    err = capsys.readouterr().err
    _one_error_line(err, "dkp-validate")
    assert "DKP_OPS_LIBRARY" in err


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_progress_per_layer_and_quiet(tmp_path, capsys, checkpoint, monkeypatch, suffix):
    """A progress bar ticks once per matrix, named by layer; --quiet turns it off (tqdm decides about terminals)."""
    bars = []

    class Recorder:
        def __init__(self, **kwargs):
            self.kwargs, self.names = kwargs, []
            bars.append(self)

        def set_postfix_str(self, name):
            self.names.append(name)

        def update(self, n):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setattr("dkp_deploy.converters.metadata.tqdm", Recorder)
    spec = lstm_lm()
    ckpt = checkpoint(spec)
    assert cli.convert_main([str(ckpt), "-o", str(tmp_path / f"a{suffix}"), "--mode", "step"]) == 0
    assert cli.convert_main([str(ckpt), "-o", str(tmp_path / f"b{suffix}"), "--mode", "step", "-q"]) == 0
    loud, quiet = bars
    assert loud.kwargs["total"] == len(spec.matrices()) and loud.kwargs["disable"] is None and loud.closed
    assert sorted(loud.names) == sorted(spec.matrices())
    assert quiet.kwargs["disable"] is True
    out = capsys.readouterr().out
    assert out.count("dkp-convert: wrote") == 1 and f"a{suffix}" in out


# -- flags every tool shares, output-path checks, missing extras (issue 14) ------------------------------------

MAINS = {"dkp-convert": cli.convert_main, "dkp-validate": cli.validate_main, "dkp-bench": cli.bench_main}


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_every_tool_has_the_shared_flags(prog, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        MAINS[prog](["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"{prog} {cli.__version__}"
    with pytest.raises(SystemExit) as e:
        MAINS[prog](["--help"])
    text = capsys.readouterr().out
    for flag in ("--quiet", "--verbose", "--json", "--debug"):
        assert flag in text
    with pytest.raises(SystemExit) as e:
        MAINS[prog](["--quiet", "--verbose"])
    assert e.value.code == 2
    _one_error_line(capsys.readouterr().err, prog)


@pytest.mark.parametrize("output, words", [("-", "stdout"), (".", "directory"), ("a\nb.onnx", "newline")])
def test_refused_output_paths(checkpoint, tmp_path, capsys, output, words) -> None:
    path = checkpoint(mlp())
    assert cli.convert_main([str(path), "-o", output]) == 2
    assert words in _one_error_line(capsys.readouterr().err, "dkp-convert")
    assert not (tmp_path / "-").exists()


def test_json_summary_and_json_errors(checkpoint, tmp_path, capsys) -> None:
    path = checkpoint(mlp())
    out = tmp_path / "m.onnx"
    assert cli.convert_main([str(path), "-o", str(out), "--json", "--sparse-impl", "portable"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out) and summary["bytes"] == out.stat().st_size
    assert summary["target"] == "onnx" and summary["sparse_impl"] == "portable"
    assert cli.validate_main([str(tmp_path / "missing.pt"), str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["exit_code"] == 2 and "no such file" in json.loads(captured.out)["error"]
    _one_error_line(captured.err, "dkp-validate")


def test_tflite_without_the_extra_is_one_line_exit_2(checkpoint, tmp_path, capsys, monkeypatch) -> None:
    path = checkpoint(mlp())
    for name in [m for m in sys.modules if m == "tflite" or m.startswith(("tflite.", "dkp_deploy.converters.tflite"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tflite", None)  # `import tflite` now raises ModuleNotFoundError
    assert cli.convert_main([str(path), "-o", str(tmp_path / "x.tflite")]) == 2
    line = _one_error_line(capsys.readouterr().err, "dkp-convert")
    assert "install dkp-deploy[tflite]" in line and not (tmp_path / "x.tflite").exists()


def test_disk_full_is_one_line_exit_2(checkpoint, tmp_path, capsys, monkeypatch) -> None:
    import errno

    path = checkpoint(mlp())
    out = tmp_path / "m.onnx"

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dkp_deploy.fileio.os.replace", full)
    assert cli.convert_main([str(path), "-o", str(out), "--sparse-impl", "portable"]) == 2
    assert "No space left on device" in _one_error_line(capsys.readouterr().err, "dkp-convert")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
