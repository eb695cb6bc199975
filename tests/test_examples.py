"""Smoke tests of the examples and the accuracy reproduction (tiny settings), and the corpus they train on."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    return _module(ROOT / "benchmarks" / "accuracy" / "data.py", "accuracy_data")


@pytest.fixture(scope="module")
def reproduce():
    return _module(ROOT / "benchmarks" / "accuracy" / "reproduce.py", "accuracy_reproduce")


@pytest.fixture(scope="module")
def corpus(data):
    return data.load_corpus()


def test_corpus_is_the_pydoc_topics_text_split_80_10_10(data, corpus):
    from pydoc_data.topics import topics

    # independent re-tokenisation: the same token stream, built straight from the topics
    stream = []
    for key in sorted(topics):
        for line in topics[key].splitlines():
            words = re.findall(r"_*[a-z][a-z0-9_]*(?:'[a-z]+)?|[0-9]+|[.,;:()]", line.lower())
            stream += words + ["<eos>"] if words else []
    sizes = np.array([len(corpus.train), len(corpus.valid), len(corpus.test)])
    assert sizes.sum() == len(stream) > 50_000
    np.testing.assert_allclose(sizes / sizes.sum(), [0.8, 0.1, 0.1], atol=0.005)
    ids = np.concatenate([corpus.train, corpus.valid, corpus.test])
    words = corpus.words
    assert [words[i] if words[i] != "<unk>" else None for i in ids[:2000]] == [
        w if w in words else None for w in stream[:2000]
    ]
    train_counts = {}
    for w in stream[: len(corpus.train)]:
        train_counts[w] = train_counts.get(w, 0) + 1
    assert set(words) == {"<unk>", "<eos>"} | {w for w, c in train_counts.items() if c >= 2}
    assert words[:2] == ("<unk>", "<eos>")
    assert data.load_corpus().words == words  # deterministic


def test_corpus_ids_and_text(corpus):
    ids = corpus.ids("The assert statement, zzzunseenzzz")
    assert corpus.text(ids) == "the assert statement , <unk>"
    assert corpus.text([*ids[:2], 1, ids[2]]) == "the assert\nstatement"


def test_full_reproduction_compresses_every_method_to_20x(reproduce):
    s = reproduce.Setting()
    M, N = 4 * s.hidden, 2 * s.hidden
    ms = reproduce.methods(s)
    assert list(ms) == list(reproduce.METHOD_ORDER)
    (m1, n1), (m2, n2) = ms["kp"].doping["kron_shape"]
    assert m1 * m2 == M and n1 * n2 == N
    assert M * N / (m1 * n1 + m2 * n2) == pytest.approx(20, rel=0.01)
    assert min(m1, n1) * min(m2, n2) == N  # KP alone keeps full rank
    rank = ms["lmf"].doping["rank"]
    assert M * N / (rank * (M + N)) == pytest.approx(20, rel=0.01)
    assert ms["pruning"].final_density == pytest.approx(0.05)
    (a, b), (c, d) = ms["doped_kp_lindec"].doping["kron_shape"]
    stored = a * b + c * d + round(ms["doped_kp_lindec"].final_density * M * N)
    assert M * N / stored == pytest.approx(20, rel=0.001)
    assert {ms[n].cmr_schedule for n in ("doped_kp_lindec", "doped_kp_constant", "doped_kp_expdec")} == {
        "linDec", "constant", "expDec"}
    assert ms["doped_kp_no_cmr"].cmr == 0 and ms["doped_kp_lindec"].cmr == pytest.approx(0.7)
    lmf_rank = ms["doped_lmf"].doping["rank"]  # Table 3's doped LMF / HMD: structure + W_s at the same 20x
    stored = lmf_rank * (M + N) + round(ms["doped_lmf"].final_density * M * N)
    assert M * N / stored == pytest.approx(20, rel=0.001) and ms["doped_lmf"].final_density > 0
    rows, hrank = ms["doped_hmd"].doping["hmd_rows"], ms["doped_hmd"].doping["rank"]
    stored = rows * N + hrank * (M - rows + N) + round(ms["doped_hmd"].final_density * M * N)
    assert M * N / stored == pytest.approx(20, rel=0.001) and ms["doped_hmd"].final_density > 0


def test_reproduce_tiny_writes_results_table_and_plot(reproduce, tmp_path):
    assert reproduce.main(["--tiny", "--jobs", "1", "--quiet", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    results = summary["results"]
    assert list(results) == list(reproduce.METHOD_ORDER)
    s = reproduce.TINY
    weights = 2 * (4 * s.hidden) * (2 * s.hidden)
    for name, r in results.items():
        assert np.isfinite(r["test_ppl"]) and 1 < r["test_ppl"] < 1e5
        assert len(r["curve"]) == s.steps // s.eval_every
        want_cf = 1.0 if name == "dense" else s.cf
        assert weights / r["lstm_params_stored"] == pytest.approx(want_cf, rel=0.1)
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(results)
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run_example(script: str, out: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        module = _module(ROOT / "examples" / f"{script}.py", f"example_{script}")
        assert module.main(["--out", str(out), "--tiny", "--quiet", "--threads", "1"]) == 0
    finally:
        sys.path.remove(str(ROOT / "examples"))


def test_quickstart_tiny_runs_end_to_end(tmp_path, capsys):
    _run_example("quickstart", tmp_path)
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("model.pt", "model.step.onnx", "model.step.dense.onnx", "model.step.tflite"):
        assert (tmp_path / name).stat().st_size > 0
    assert all(p["passed"] for p in summary["parity"].values())
    assert summary["lstm_cf"] == pytest.approx(4.0, rel=0.01)
    assert summary["generated"].startswith("the assert statement ")
    assert "PASSED" in printed and "FAILED" not in printed


def test_demo_general_path_tiny_runs_end_to_end(tmp_path, capsys):
    """`make demo`'s script: a plain torch WordLM compressed, fine-tuned, exported, validated against torch, run."""
    _run_example("compress_pretrained", tmp_path)
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("model.hub.onnx", "model.step.onnx", "model.step.dense.onnx", "model.onnx", "dense.pt",
                 "model.int8.onnx", "model.int8-dynamic.onnx", "model.dense.int8.onnx"):
        assert (tmp_path / name).stat().st_size > 0
    assert set(summary["parity"]) == {"step", "step_dense", "sequence", "sequence_int8", "sequence_int8_dynamic"}
    assert all(p["passed"] and p["max_e2e_error"] <= 1e-4 for p in summary["parity"].values())
    # onnxruntime's perplexity of the fp32 doped file is torch's; int8 files move it a little, not a lot
    ppl = summary["onnx_perplexity"]
    assert ppl["doped fp32"] == pytest.approx(summary["perplexity"]["fine_tuned"], rel=1e-4)
    assert ppl["dense fp32"] == pytest.approx(summary["perplexity"]["dense"], rel=1e-4)
    for name in ("doped int8", "doped int8-dynamic", "dense int8 (ORT quantize_dynamic)"):
        assert ppl[name] == pytest.approx(ppl[name.replace("int8-dynamic", "fp32").replace("int8", "fp32")
                                              .split(" (")[0]], rel=0.05)
    assert summary["lstm_cf"] == pytest.approx(4.0, rel=0.01)
    assert summary["perplexity"]["fine_tuned"] > 1 and summary["generated"].startswith("the assert statement ")
    assert "PASSED" in printed and "FAILED" not in printed
