"""dkp-bench: the workloads it builds, its bookkeeping, and a `--quick` smoke run (no timed assertions)."""

import json
import math

import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper

from dkp_deploy.bench import cli, measure, profile, report, workloads


def test_doped_matrix_reaches_target_cf() -> None:
    rng = np.random.default_rng(0)
    for cf in (10, 20, 25):
        w = workloads.doped_matrix(2600, 1300, cf, rng, workloads.MEDIUM_KRON)
        w.check()
        stored = w.factors["B"].size + w.factors["C"].size + w.nnz  # the paper's eq. 3, counted by hand
        assert 2600 * 1300 / stored == pytest.approx(cf, rel=1e-4)
        assert w.factors["B"].shape == (52, 65) and w.factors["C"].shape == (50, 20)


def test_random_csr_is_valid_and_has_requested_nnz() -> None:
    a = workloads.random_csr(37, 23, 100, np.random.default_rng(1))
    m = sp.csr_matrix((a.values, a.col_idx, a.row_ptr), shape=(37, 23))
    m.check_format(full_check=True)
    assert m.has_sorted_indices and m.nnz == 100
    assert np.count_nonzero(m.toarray()) == 100  # no duplicate positions were summed


def test_densified_folds_the_same_matrix() -> None:
    spec = workloads.layer_spec(12, 8, 2, seed=3, kron=((3, 2), (4, 4)))
    w = spec.blocks[0].weight
    b, c = w.factors["B"].astype(float), w.factors["C"].astype(float)
    by_hand = np.einsum("ij,kl->ikjl", b, c).reshape(12, 8) + w.sparse.to_scipy().toarray()
    dense = workloads.densified(spec).blocks[0].weight
    assert dense.structure == "dense"
    np.testing.assert_allclose(dense.factors["W"], by_hand, rtol=1e-6, atol=1e-6)


def test_macs_and_bytes_count_the_deployed_computation() -> None:
    w = workloads.doped_matrix(2600, 1300, 25, np.random.default_rng(0), workloads.MEDIUM_KRON)
    # B @ X (52*65*20) then (.) @ C^T (52*20*50) is the cheaper order for these shapes
    assert workloads.matvec_macs(w) == 52 * 65 * 20 + 52 * 20 * 50 + w.nnz
    assert workloads.matrix_bytes(w) == 4 * (52 * 65 + 50 * 20) + 8 * w.nnz + 4 * 2601


def test_compare_samples_every_callable_in_every_round() -> None:
    calls = {"a": 0, "b": 0}

    def make(k):
        def fn():
            calls[k] += 1

        return fn

    budget = measure.Budget(rounds=3, repeats=4, warmup=1)
    t = measure.compare({k: make(k) for k in calls}, budget)
    assert calls == {"a": 15, "b": 15}
    assert set(t) == {"a", "b"} and all(v.seconds > 0 and v.spread >= 0 for v in t.values())


def _tiny_graph(path) -> None:
    w = np.random.default_rng(0).random((16, 8)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t"], name="mm"), helper.make_node("Tanh", ["t"], ["y"], name="act")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8])],
        [numpy_helper.from_array(w, "W")],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_profile_summarises_ort_events(tmp_path) -> None:
    _tiny_graph(tmp_path / "t.onnx")
    prof = profile.profile(tmp_path / "t.onnx", {"x": np.ones((2, 16), np.float32)}, runs=10)
    assert prof["nodes"] == 2 and prof["runs"] >= 10
    assert {p["op"] for p in prof["by_op"]} == {"MatMul", "Tanh"}
    assert sum(p["share"] for p in prof["by_op"]) == pytest.approx(1.0)
    assert prof["kernel_us"] == pytest.approx(sum(p["us"] for p in prof["by_op"]))


def test_targets_flag_misses() -> None:
    model_rows = [{"hidden": 650, "target_cf": 25, "speedup_lstm_custom": 4.0, "bytes_bound_lstm": 12.6,
                   "mac_reduction_lstm": 13.5}]
    layer_rows = [{"cf": 20, "batch": 1, "runtime": "ORT", "impl": "custom", "shape": "2600x1300", "speedup": 6.0,
                   "bytes_reduction": 10.0, "mac_reduction": 11.9}]
    t = report.targets(layer_rows, model_rows)
    assert [x["holds"] for x in t] == [False, True, False]  # 4x < 5x; 6x >= 5x but < 8x
    assert [x["needed"] for x in t] == [5.0, 5.0, 8.0]
    assert "MISSED" in report.render_text(report.targets_table(t))
    # issue 13's int8 targets, where the rows carry them: the int8-dynamic files'; weight-only int8 is a comparison
    model_rows[0].update(lstm_custom_int8dyn_vs_int8=3.1, lstm_custom_int8_vs_int8=1.5, lstm_int8_file_ratio=7.9)
    int8_row = {**layer_rows[0], "batch": 8, "runtime": "ORT vs int8"}
    layer_rows += [{**int8_row, "impl": "custom int8-dynamic", "speedup": 1.9},
                   {**int8_row, "impl": "custom int8", "speedup": 2.5}]
    t = {x["target"]: x for x in report.targets(layer_rows, model_rows)}
    assert t["2x650 LSTM step at 25x, int8-dynamic doped vs ORT int8 dense"]["holds"] is True
    assert t["2x650 LSTM step at 25x, ORT int8 dense file / int8 doped file"]["holds"] is False
    assert t["doped layer 2600x1300 at 20x, int8-dynamic doped vs ORT int8 dense, batch 8"]["holds"] is False
    weights_only = t["doped layer 2600x1300 at 20x, int8 weight-only doped vs ORT int8 dense, batch 8"]
    assert weights_only["needed"] is None and weights_only["holds"] is None
    table = report.render_text(report.targets_table(list(t.values())))
    assert [("comparison" in line) for line in table.splitlines() if "weight-only" in line] == [True, True]
    # the docs' findings read every target, those without bounds too, and the comparisons
    lines = report.findings({"targets": report.targets(layer_rows, model_rows)})
    assert any("needs 3x" in line and "Bytes bound" not in line for line in lines)
    assert any(line.startswith("- Comparison") and "weight-only" in line for line in lines)


def test_bad_output_directory_is_exit_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["--quick", "--only", "kernel", "--no-tflite", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a directory" in err[0]


def test_argument_errors_are_one_line_and_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--threads", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dkp-bench: error:") and "usage" not in err[0]
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("dkp-bench ")


def test_quick_run_writes_json_and_plots_to_out_and_leaves_docs_alone(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    readme = tmp_path / "README.md"
    original = f"# title\n\nbefore\n{report.README_BEGIN}\nold tables\n{report.README_END}\nafter\n"
    readme.write_text(original)
    assert cli.main(["--quick", "--only", "kernel", "--no-tflite", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert json.loads((tmp_path / "dkp-bench-results" / "results.json").read_text())["kernel"]
    assert (tmp_path / "dkp-bench-results" / "kernel.png").is_file()
    assert readme.read_text() == original  # docs change only with --update-docs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "dkp-bench-results"]


def test_quick_run_json_on_stdout(tmp_path, capsys) -> None:
    assert cli.main(["--quick", "--only", "kernel", "--no-tflite", "--json", "--out", str(tmp_path / "o")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results == json.loads((tmp_path / "o" / "results.json").read_text())


def test_update_docs_refreshes_readme_tables_of_a_temp_copy(tmp_path, capsys) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    readme, page = root / "README.md", root / "docs" / "performance.md"
    readme.write_text(f"# title\n\nbefore\n{report.README_BEGIN}\nold tables\n{report.README_END}\nafter\n")
    out = root / "benchmarks" / "results"
    assert cli.main(["--quick", "--update-docs", "--docs-root", str(root)]) == 0
    text = capsys.readouterr().out
    for title in ("Kernel W_s @ x", "Doped layer", "LSTM LM step graph", "Profile"):
        assert title in text
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["threads"] == 1 and results["environment"]["cpu"]
    impls = {r["impl"] for r in results["kernel"]}
    assert "TFLite sparse FC" in impls and len(impls) >= 4
    for section in ("kernel", "layer", "model"):
        speedups = [v for r in results[section] for k, v in r.items() if k.startswith("speedup") and v is not None]
        assert speedups and all(math.isfinite(v) and v > 0 for v in speedups)
    assert {r["runtime"] for r in results["layer"]} == {"ORT", "ORT vs int8", "ORT 2 threads vs 1", "TFLite"}
    assert all(r["lm_custom_vs_int8"] > 0 and r["lmd_custom_vs_int8"] > 0 for r in results["model"])
    assert results["profile"]["lstm_custom"]["nodes"] > 0
    # the general export path's LM step, timed next to the native file's (torch is in the test environment)
    assert all(0 < r["general_vs_native_lm"] < 10 and r["file_bytes"]["lm_general"] for r in results["model"])
    assert results["targets"] == []  # the targets are stated at the paper's shapes, which --quick does not run
    for name in ("kernel", "layer", "model", "profile"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = page.read_text()
    assert "dkp-bench --quick" in doc and "## Reading this run" in doc and "](../benchmarks/results/model.png)" in doc
    block = readme.read_text()
    assert block.startswith("# title\n\nbefore\n") and block.endswith(f"{report.README_END}\nafter\n")
    assert "old tables" not in block and "**Doped layer" in block and "](benchmarks/results/model.png)" in block
    assert "Profile" not in block  # the README shows the headline tables; the page has the rest


def test_update_docs_readme_without_markers_is_exit_2(tmp_path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    (tmp_path / "docs").mkdir()
    args = ["--quick", "--only", "kernel", "--no-tflite", "--update-docs", "--docs-root", str(tmp_path)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "block to refresh" in err[0]
    assert readme.read_text() == "# no markers\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "docs"]  # nothing measured or written
