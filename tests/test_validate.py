"""dkp_deploy.validate: passes on faithful files, fails on altered ones, reports clearly, rejects bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _onnx_models import lstm, lstm_lm, mlp
from onnx import numpy_helper

from dkp_deploy import signature
from dkp_deploy.converters.onnx import to_onnx
from dkp_deploy.errors import InputError
from dkp_deploy.validate import assert_parity, validate


def _alter(path, out, endswith: str, delta: float = 1e-3):
    """Copy of the ONNX file at `path` with one value of the first initializer named *`endswith` changed."""
    model = onnx.load(str(path))
    graphs = [model.graph] + [a.g for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    for g in graphs:
        for t in g.initializer:
            if t.name.endswith(endswith):
                a = numpy_helper.to_array(t).copy()
                a.flat[0] += delta
                t.CopyFrom(numpy_helper.from_array(a, t.name))
                onnx.save(model, str(out))
                return out
    raise AssertionError(f"no initializer *{endswith}")


@pytest.mark.parametrize("make,mode,impl", [(mlp, "sequence", "custom"), (lstm, "sequence", "portable"),
                                            (lstm_lm, "step", "custom"), (lstm_lm, "sequence", "dense")])
def test_faithful_files_pass(tmp_path, make, mode, impl):
    spec = make()
    path = to_onnx(spec, tmp_path / "m.onnx", sparse_impl=impl, mode=mode, quiet=True)
    report = assert_parity(spec, path)
    assert report.passed and report.mode == (mode if spec.is_recurrent else "sequence")
    kinds = [r.kind for r in report.rows]
    assert kinds.count("layer") == len(spec.matrices()) and kinds.count("e2e") >= 2
    assert "PASSED" in report.table()


@pytest.mark.parametrize("tensor", ["W_s/values", "/B", "/C_T"])
def test_altered_weight_fails(tmp_path, tensor):
    spec = lstm()
    path = to_onnx(spec, tmp_path / "m.onnx", mode="step", quiet=True)
    bad = _alter(path, tmp_path / "bad.onnx", tensor)
    report = validate(spec, bad)
    assert not report.passed
    failed = [r for r in report.rows if not r.passed]
    assert any(r.kind == "layer" and r.name == "lstm.0" for r in failed)
    with pytest.raises(AssertionError, match="FAIL"):
        assert_parity(spec, bad)


def test_altered_bias_fails_end_to_end(tmp_path):
    """Biases are not matrices: the end-to-end rows catch them."""
    spec = mlp()
    bad = _alter(to_onnx(spec, tmp_path / "m.onnx", quiet=True), tmp_path / "bad.onnx", "fc5/bias", delta=0.01)
    report = validate(spec, bad)
    assert not report.passed and all(r.passed for r in report.rows if r.kind == "layer")


def test_tolerances_decide(tmp_path):
    spec = mlp()
    bad = _alter(to_onnx(spec, tmp_path / "m.onnx", quiet=True), tmp_path / "bad.onnx", "fc1/B", delta=1e-4)
    assert not validate(spec, bad).passed
    assert validate(spec, bad, rtol_layer=1e-2, atol_e2e=1e-2).passed


def test_json_is_strict_and_complete(tmp_path):
    spec = lstm()
    path = to_onnx(spec, tmp_path / "m.onnx", quiet=True)
    other = to_onnx(mlp(), tmp_path / "other.onnx", quiet=True)  # another model: layers missing, inputs differ
    report = validate(spec, other)
    assert not report.passed
    data = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["passed"] is False and {"kind", "name", "max_abs", "max_rel", "tol", "passed"} <= set(data["rows"][0])
    assert json.loads(validate(spec, path).to_json())["passed"] is True


def test_user_inputs(tmp_path):
    spec = lstm(batch_first=True)
    path = to_onnx(spec, tmp_path / "m.onnx", quiet=True)
    feeds = signature.random_feeds(spec, time=9, batch=4, seed=3)
    np.savez(tmp_path / "in.npz", **feeds)
    report = validate(spec, path, inputs=tmp_path / "in.npz")
    assert report.passed and any(r.name.startswith("user") for r in report.rows)
    np.savez(tmp_path / "wrong.npz", x_t=feeds["x"][0])
    with pytest.raises(InputError, match="x_t"):
        validate(spec, path, inputs=tmp_path / "wrong.npz")
    bad = {
        "features": {**feeds, "x": feeds["x"][..., :3]},
        "batch": {**feeds, "h0": feeds["h0"][:, :1]},
        "finite": {**feeds, "x": np.where(feeds["x"] > 1, np.nan, feeds["x"])},
    }
    for label, arrays in bad.items():
        with pytest.raises(InputError, match="'(x|h0)'"):
            validate(spec, path, inputs=arrays)
        np.savez(tmp_path / f"{label}.npz", **arrays)
        with pytest.raises(InputError, match=f"{label}.npz"):
            validate(spec, path, inputs=tmp_path / f"{label}.npz")
    lm = lstm_lm()
    lm_path = to_onnx(lm, tmp_path / "lm.onnx", mode="step", quiet=True)
    ids = signature.random_feeds(lm, "step", batch=2)
    assert validate(lm, lm_path, inputs=ids).passed
    with pytest.raises(InputError, match="token ids"):
        validate(lm, lm_path, inputs={**ids, "x_t": ids["x_t"] + 100})
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="npz"):
        validate(spec, path, inputs=tmp_path / "junk.npz")


def test_bad_exported_files(tmp_path):
    spec = mlp()
    with pytest.raises(InputError, match="no such file"):
        validate(spec, tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="ONNX"):
        validate(spec, tmp_path / "junk.onnx")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown file type"):
        validate(spec, tmp_path / "m.bin")
    plain = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(InputError, match="dkp-convert"):
        validate(spec, tmp_path / "plain.onnx")



@pytest.mark.parametrize("tensor,change", [("W_s/col_idx", lambda a: np.full_like(a, 255)),
                                           ("fc1/B", lambda a: a[:, :1]), ("W_s/row_ptr", lambda a: a[::-1].copy())])
def test_inconsistent_tensors_in_file(tmp_path, tensor, change):
    """A file whose tensors no longer fit together (hand-edited, corrupted): bad input naming the file."""
    spec = mlp()
    model = onnx.load(str(to_onnx(spec, tmp_path / "m.onnx", quiet=True)))
    t = next(t for t in model.graph.initializer if t.name.endswith(tensor))
    t.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(t)), t.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(InputError, match="bad.onnx: .*fc1"):
        validate(spec, tmp_path / "bad.onnx")


@pytest.mark.parametrize("key,value,message", [("dkp.format_version", "99", "dkp metadata format version '99'"),
                                               ("dkp.layers", "[1, 2]", "corrupt dkp.layers"),
                                               ("dkp.layers", '{"fc1": {"shape": [12]}}', "corrupt dkp.layers")])
def test_bad_metadata_in_file(tmp_path, key, value, message):
    spec = mlp()
    model = onnx.load(str(to_onnx(spec, tmp_path / "m.onnx", quiet=True)))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, key: value})
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(InputError, match=f"bad.onnx: {message}"):
        validate(spec, tmp_path / "bad.onnx")
