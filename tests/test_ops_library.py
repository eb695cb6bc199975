"""dkp_deploy.ops: finding the built library, registering it into sessions, and its failure modes."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from ops_graphs import CSR_NAMES, csr_arrays, model_bytes, random_csr

from dkp_deploy import ops


def test_library_path_points_at_the_built_library() -> None:
    path = ops.library_path()
    assert path.is_file() and path.name.startswith("_dkp_ops")


def test_missing_library_says_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "_LIBRARY_STEM", "_dkp_ops_not_built")
    with pytest.raises(ops.OpsLibraryMissing, match=r"C\+\+17 compiler.*reinstall"):
        ops.library_path()
    with pytest.raises(ops.OpsLibraryMissing):
        ops.session_options()


def test_env_override_must_name_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(ops.LIBRARY_ENV, str(tmp_path / "nope.so"))
    with pytest.raises(ops.OpsLibraryMissing, match=ops.LIBRARY_ENV):
        ops.library_path()


def test_session_options_sets_attributes_and_rejects_unknown_ones() -> None:
    options = ops.session_options(intra_op_num_threads=1, inter_op_num_threads=1)
    assert options.intra_op_num_threads == 1
    with pytest.raises(TypeError, match="no_such_option"):
        ops.session_options(no_such_option=3)


def test_sessions_outlive_their_options_and_registration_repeats() -> None:
    """The op domain is process-wide: many registrations, options dropped before the sessions run."""
    rng = np.random.default_rng(0)
    w = random_csr(rng, 5, 4, 0.5)
    model = model_bytes({"X": np.ones((2, 4), np.float32), **csr_arrays(w)}, ("X", *CSR_NAMES), constant=CSR_NAMES)
    cpu = ["CPUExecutionProvider"]
    sessions = [ort.InferenceSession(model, ops.session_options(), providers=cpu) for _ in range(3)]
    gc.collect()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    for sess in sessions:
        np.testing.assert_allclose(sess.run(None, {"X": x})[0], x @ w.toarray().T, rtol=1e-5, atol=1e-6)


def test_ops_module_does_not_import_torch() -> None:
    code = "import sys, dkp_deploy.ops as o; o.session_options(); assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_importing_ops_registers_the_ai_dkp_schemas() -> None:
    import subprocess
    import sys

    code = ("import onnx; assert not onnx.defs.has('SparseMatVec', 'ai.dkp'); import dkp_deploy.ops; "
            "assert onnx.defs.has('SparseMatVec', 'ai.dkp') and onnx.defs.has('DopedMatMul', 'ai.dkp')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
