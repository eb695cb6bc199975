"""dkp_deploy.runtime: the ops library only where the graph needs it, feeds cast and checked, clear errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _onnx_models import lstm, mlp

from dkp_deploy import reference, runtime, signature
from dkp_deploy.converters.onnx import to_onnx
from dkp_deploy.errors import InputError


def test_library_registered_only_when_needed(tmp_path, monkeypatch):
    spec = mlp()
    portable = to_onnx(spec, tmp_path / "p.onnx", sparse_impl="portable", quiet=True)
    custom = to_onnx(spec, tmp_path / "c.onnx", sparse_impl="custom", quiet=True)
    assert not runtime.uses_dkp_ops(portable) and runtime.uses_dkp_ops(custom)
    monkeypatch.setenv("DKP_OPS_LIBRARY", str(tmp_path / "no-such-library.so"))
    runtime.session(portable)  # stock onnxruntime is enough
    with pytest.raises(Exception, match="DKP_OPS_LIBRARY"):
        runtime.session(custom)


def test_session_options_and_threads(tmp_path):
    import onnxruntime as ort

    path = to_onnx(mlp(), tmp_path / "m.onnx", quiet=True)
    sess = runtime.session(path, threads=2, graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    assert sess.get_session_options().intra_op_num_threads == 2
    assert sess.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_run_casts_and_checks_feeds(tmp_path):
    spec = lstm()
    path = to_onnx(spec, tmp_path / "s.onnx", quiet=True)
    sess = runtime.session(path)
    assert [i.name for i in sess.get_inputs()] == ["x", "h0", "c0"] and not sess.get_overridable_initializers()
    feeds = {k: v.astype(np.float64) for k, v in signature.random_feeds(spec, time=3).items()}
    out = runtime.run(sess, feeds)
    assert out["y"].dtype == np.float32 and out["y"].shape == (3, 2, 4)
    np.testing.assert_allclose(out["hn"], reference.run(spec, feeds)["hn"], atol=2e-6)
    # a state left out is zeros of [L, batch, H], batch read off x (torch's default)
    no_state = runtime.run(sess, {"x": feeds["x"]})
    zeros = np.zeros((2, 2, 4))
    np.testing.assert_allclose(no_state["hn"], reference.run(spec, {"x": feeds["x"], "h0": zeros, "c0": zeros})["hn"],
                               atol=2e-6)
    with pytest.raises(InputError, match="x_t"):
        runtime.run(sess, {"x_t": feeds["x"][0]})


def test_unloadable_files(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(InputError, match="junk.onnx"):
        runtime.session(tmp_path / "junk.onnx")
    with pytest.raises(InputError, match="no such file"):
        runtime.session(tmp_path / "missing.onnx")


@pytest.mark.parametrize("change,message", [
    ("opset", "imports ai.dkp opset 2; this dkp-deploy implements opset 1"),
    ("attribute", "unknown attribute(s) block_size"),
    ("hub_node", "ai.dkp::DopedMatMul node"),
])
def test_unknown_ai_dkp_versions_attributes_and_nodes_are_refused(tmp_path, change, message):
    """onnxruntime's custom-op API cannot see the domain version or a node's attributes: the deploy path checks."""
    import onnx
    from onnx import helper

    path = to_onnx(mlp(), tmp_path / "m.onnx", quiet=True)
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.domain == "ai.dkp")
    if change == "opset":
        next(o for o in model.opset_import if o.domain == "ai.dkp").version = 2
    elif change == "attribute":
        node.attribute.append(helper.make_attribute("block_size", 4))
    else:
        node.op_type = "DopedMatMul"
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(InputError, match=re.escape(message)) as e:
        runtime.session(tmp_path / "bad.onnx")
    assert "bad.onnx" in str(e.value)
