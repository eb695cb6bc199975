"""Our files through the tools ONNX users already run on theirs: shape inference in a process that knows nothing of
`ai.dkp`, onnxruntime's dynamic int8 quantization, and the graph simplifiers onnxsim / onnxslim."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from _onnx_models import lstm, lstm_lm, mlp

from dkp_deploy import reference, runtime, signature
from dkp_deploy.converters.onnx import to_onnx
from dkp_deploy.validate import validate

FILES = [("mlp", mlp, "sequence"), ("lm_step", lstm_lm, "step"), ("lm_sequence", lstm_lm, "sequence"),
         ("lstm_sequence", lstm, "sequence")]
INT8_FILES = [("mlp_int8", mlp, "sequence"), ("lm_step_int8", lstm_lm, "step")]  # quantize="int8"

# Strict inference in a fresh interpreter that never imports dkp_deploy (so no ai.dkp schema is registered):
# every node output, in every graph (Scan bodies too), must come out typed from the file alone.
_UNTYPED = """
import sys, onnx
model = onnx.shape_inference.infer_shapes(onnx.load(sys.argv[1]), strict_mode=True)
def untyped(g):
    known = {v.name for v in [*g.value_info, *g.output, *g.input]} | {t.name for t in g.initializer}
    out = [o for n in g.node for o in n.output if o and o not in known]
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += untyped(a.g)
    return out
assert "dkp_deploy" not in sys.modules
print(len(untyped(model.graph)), *untyped(model.graph)[:5])
"""


@pytest.mark.parametrize("name,make,mode", FILES + INT8_FILES)
def test_strict_shape_inference_types_every_output_without_our_schemas(tmp_path, name, make, mode):
    path = to_onnx(make(), tmp_path / f"{name}.onnx", mode=mode, quiet=True,
                   quantize="int8" if name.endswith("int8") else None)
    proc = subprocess.run([sys.executable, "-c", _UNTYPED, str(path)], capture_output=True, text=True, check=True)
    assert proc.stdout.split()[0] == "0", proc.stdout


def test_our_schemas_infer_types_in_process():
    from onnx import TensorProto, helper

    import dkp_deploy.ops  # noqa: F401  (registers the ai.dkp schemas)

    for op, inputs, attrs, rows in [
        ("SparseMatVec", ["x", "rp", "ci", "v"], {}, 9),
        ("SparseMatVecInt8", ["x", "rp", "ci", "v", "s"], {}, 9),
        ("DopedMatMul", ["x", "b", "c"], {"structure": "kron", "shape": [12, 5], "matrix": "w"}, 12),
    ]:
        assert onnx.defs.get_schema(op, 1, "ai.dkp").has_type_and_shape_inference_function
        node = helper.make_node(op, inputs, ["y"], domain="ai.dkp", **attrs)
        infos = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 5]),
                 helper.make_tensor_value_info("rp", TensorProto.INT32, [10])]
        graph = helper.make_graph([node], "g", infos[:1] + infos[1:] * op.startswith("SparseMatVec"),
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                        helper.make_opsetid("ai.dkp", 1)])
        out = onnx.shape_inference.infer_shapes(model).graph.output[0].type.tensor_type
        dims = [d.dim_param or d.dim_value for d in out.shape.dim]
        assert out.elem_type == TensorProto.FLOAT and dims == ["batch", "time", rows], (op, dims)


@pytest.mark.parametrize("name,make,mode", FILES[:2] + INT8_FILES)
def test_quantize_dynamic_runs_on_our_files(tmp_path, name, make, mode):
    """onnxruntime's int8 dynamic quantization quantizes the dense MatMuls around our op and leaves the op be (our
    int8 files too: there it quantizes the layers we leave dense)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    spec = make()
    int8 = name.endswith("int8")
    path = to_onnx(spec, tmp_path / f"{name}.onnx", mode=mode, quiet=True, quantize="int8" if int8 else None)
    # reduce_range: 7-bit weights, as onnxruntime advises where x86 CPUs lack VNNI. Its AVX2 MatMulInteger sums
    # u8 x s8 pairs in saturating int16 (vpmaddubsw): full-range weights were off by 28% of this MLP's output on
    # the Zen 3 here, 1% with it (our SparseMatVecInteger pairs its products so that they cannot saturate).
    quantize_dynamic(str(path), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8, reduce_range=True)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert ("SparseMatVecInt8" if int8 else "SparseMatVec") in ops
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    feeds = signature.random_feeds(spec, mode, batch=3)
    ref, out = reference.run(spec, feeds, mode), runtime.run(tmp_path / "q.onnx", feeds)
    for key, want in ref.items():  # int8 weights: close, not exact
        assert np.abs(out[key] - want).max() <= 0.05 * np.abs(want).max(), key


@pytest.mark.parametrize("tool", ["onnxslim", "onnxsim"])
@pytest.mark.parametrize("make", [lstm_lm, lstm])
def test_simplifiers_keep_the_state_inputs(tmp_path, tool, make):
    """Simplify a sequence file, then validate it: h0 / c0 stay inputs and a fed state changes the outputs."""
    module = pytest.importorskip(tool)
    spec = make()
    path = to_onnx(spec, tmp_path / "seq.onnx", quiet=True)
    model = onnx.load(str(path))
    simplified = module.slim(model) if tool == "onnxslim" else module.simplify(model)[0]
    out_path = tmp_path / f"seq.{tool}.onnx"
    onnx.save(simplified, str(out_path))
    assert [i.name for i in onnx.load(str(out_path)).graph.input] == ["x", "h0", "c0"]
    report = validate(spec, out_path)  # with a fed state and without, at two T
    assert report.passed, report.table()


def test_polygraphy_compares_the_custom_op_file_with_the_portable_one(tmp_path):
    """polygraphy's CLI builds its own onnxruntime session (no custom-op library): its Python API takes ours."""
    pytest.importorskip("polygraphy")
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, DataLoader

    spec = lstm_lm()
    paths = {impl: to_onnx(spec, tmp_path / f"{impl}.onnx", mode="step", sparse_impl=impl, quiet=True)
             for impl in ("custom", "portable")}
    runners = [OnnxrtRunner(lambda p=p: runtime.session(p), name=impl) for impl, p in paths.items()]
    results = Comparator.run(runners, data_loader=DataLoader(iterations=3, val_range={"x_t": (0, 10)}))
    assert bool(Comparator.compare_accuracy(results))
    for outputs in results["custom"]:
        assert set(outputs.keys()) == {"y_t", "h_next", "c_next"}
