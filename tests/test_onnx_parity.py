"""Every architecture x every sparse impl x both modes, exported to ONNX and run in onnxruntime, against the
float64 numpy reference (dkp_deploy.reference), including T = 1, 5, 37 and omitted h0/c0."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _onnx_models import lstm, lstm_lm, mlp

from dkp_deploy import reference, runtime, signature
from dkp_deploy.converters.onnx import SPARSE_IMPLS, to_onnx

ATOL = 2e-6  # float32 graph vs float64 reference on these small, well-scaled models


def _check(spec, path, mode, feeds):
    out = runtime.run(path, feeds)
    ref = reference.run(spec, feeds, mode)
    assert set(out) == set(ref)
    for name, want in ref.items():
        assert out[name].shape == want.shape, name
        np.testing.assert_allclose(out[name], want, rtol=0, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("impl", SPARSE_IMPLS)
def test_mlp(tmp_path, impl):
    spec = mlp()
    path = to_onnx(spec, tmp_path / "m.onnx", sparse_impl=impl, quiet=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    for batch in (1, 3):
        _check(spec, path, "sequence", signature.random_feeds(spec, batch=batch, seed=batch))


@pytest.mark.parametrize("impl", SPARSE_IMPLS)
@pytest.mark.parametrize("arch", ["lstm", "lstm_lm"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_sequence(tmp_path, impl, arch, batch_first):
    spec = (lstm if arch == "lstm" else lstm_lm)(batch_first=batch_first)
    path = to_onnx(spec, tmp_path / "s.onnx", sparse_impl=impl, mode="sequence", quiet=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = runtime.session(path)
    for T in (1, 5, 37):
        for with_state in (True, False):
            feeds = signature.random_feeds(spec, "sequence", batch=2, time=T, seed=T, with_state=with_state)
            _check(spec, sess, "sequence", feeds)


@pytest.mark.parametrize("impl", SPARSE_IMPLS)
@pytest.mark.parametrize("arch", ["lstm", "lstm_lm"])
def test_recurrent_step(tmp_path, impl, arch):
    spec = (lstm if arch == "lstm" else lstm_lm)()
    path = to_onnx(spec, tmp_path / "t.onnx", sparse_impl=impl, mode="step", quiet=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = runtime.session(path)
    for batch in (1, 4):
        _check(spec, sess, "step", signature.random_feeds(spec, "step", batch=batch, seed=batch))


def test_step_graph_iterated_equals_sequence(tmp_path):
    """Streaming: feeding the step graph its own state T times gives the sequence graph's outputs."""
    spec = lstm_lm()
    step = runtime.session(to_onnx(spec, tmp_path / "step.onnx", mode="step", quiet=True))
    seq = signature.random_feeds(spec, "sequence", batch=2, time=6, seed=7)
    ref = reference.run(spec, seq, "sequence")
    h, c = seq["h0"], seq["c0"]
    for t in range(6):
        out = runtime.run(step, {"x_t": seq["x"][t], "h": h, "c": c})
        np.testing.assert_allclose(out["y_t"], ref["y"][t], atol=ATOL)
        h, c = out["h_next"], out["c_next"]
    np.testing.assert_allclose(h, ref["hn"], atol=ATOL)
    np.testing.assert_allclose(c, ref["cn"], atol=ATOL)


def test_torch_module_source(tmp_path):
    """to_onnx takes the doped torch module too (through dkp_deploy.nn.to_spec)."""
    pytest.importorskip("torch")
    from dkp_deploy.nn import from_spec

    spec = lstm_lm(batch_first=True)
    path = to_onnx(from_spec(spec), tmp_path / "t.onnx", sparse_impl="custom", quiet=True)
    _check(spec, path, "sequence", signature.random_feeds(spec, "sequence", batch=2, time=4))


@pytest.mark.parametrize("make,mode", [(mlp, "sequence"), (lstm, "step"), (lstm_lm, "sequence")])
def test_portable_runs_in_a_second_runtime(tmp_path, make, mode):
    """Standard ops only: onnx's own reference evaluator (not onnxruntime) runs the portable file too."""
    from onnx.reference import ReferenceEvaluator

    spec = make(batch_first=True) if make is not mlp else make()
    path = to_onnx(spec, tmp_path / "p.onnx", sparse_impl="portable", mode=mode, quiet=True)
    feeds = signature.random_feeds(spec, mode, time=3, seed=4)
    names = [s.name for s in signature.outputs(spec, mode)]
    out = dict(zip(names, ReferenceEvaluator(str(path)).run(None, feeds)))
    for name, want in reference.run(spec, feeds, mode).items():
        np.testing.assert_allclose(out[name], want, atol=ATOL, err_msg=name)
