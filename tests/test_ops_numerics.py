"""ai.dkp::SparseMatVec computes X @ W^T (+ Y0): checked against scipy.sparse in float64 over random shapes."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops_graphs import (
    CSR_NAMES,
    MODES,
    assert_matches,
    csr_arrays,
    model_bytes,
    random_csr,
    reference,
    run_case,
    session,
)

ROOT = Path(__file__).resolve().parents[1]
COL_DTYPES = (np.int32, np.uint16, np.uint8)  # uint8: column gaps (ops_graphs.gap_form)


@st.composite
def cases(draw):
    """(W, X, Y0 or None, constant CSR?, Y0 named "" on the node?) over the shapes the contract allows."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    m = draw(st.integers(0, 48))
    n = draw(st.integers(1, 48))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]))
    empty_rows = draw(st.sampled_from([0.0, 0.5]))
    w = random_csr(rng, m, n, density, empty_rows)
    # batch sizes cover the 1-row path and every block width (<= 4, <= 8, <= 16, several blocks)
    lead = draw(
        st.one_of(
            st.just(()),
            st.tuples(st.sampled_from([1, 2, 3, 5, 8, 9, 16, 17, 40])),
            st.tuples(st.integers(1, 3), st.integers(1, 7)),
        )
    )
    x = rng.standard_normal((*lead, n)).astype(np.float32)
    y0_mode = draw(st.sampled_from(["none", "empty_name", "full", "broadcast"]))
    y0 = None
    if y0_mode == "full":
        y0 = rng.standard_normal((*lead, m)).astype(np.float32)
    elif y0_mode == "broadcast":
        y0 = rng.standard_normal((m,)).astype(np.float32)
    col_dtype = draw(st.sampled_from(COL_DTYPES))
    return w, x, y0, draw(st.booleans()), y0_mode == "empty_name", col_dtype, draw(st.sampled_from(MODES))


@settings(max_examples=160, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_matches_scipy_float64(case) -> None:
    """All three ops (SparseMatVecInt8 against the float64 product with its dequantized W, SparseMatVecInteger
    with that W and its uint8 X dequantized too), every column type."""
    w, x, y0, constant, empty_name, col_dtype, mode = case
    got, expected, scale = run_case(w, x, y0, constant=constant, y0_as_empty_name=empty_name, col_dtype=col_dtype,
                                    mode=mode)
    assert_matches(got, expected, scale)


@pytest.mark.parametrize("constant", [True, False])
def test_nnz_zero_gives_y0_or_zeros(constant: bool) -> None:
    rng = np.random.default_rng(1)
    w = random_csr(rng, 7, 5, 0.0)
    assert w.nnz == 0
    x = rng.standard_normal((3, 5)).astype(np.float32)
    got, _, _ = run_case(w, x, None, constant=constant)
    assert np.array_equal(got, np.zeros((3, 7), np.float32))
    y0 = rng.standard_normal((3, 7)).astype(np.float32)
    got, _, _ = run_case(w, x, y0, constant=constant)
    assert np.array_equal(got, y0)
    for batch in (1, 3):  # N = 0: an empty X still gives Y0
        got, _, _ = run_case(random_csr(rng, 7, 0, 0.0), np.ones((batch, 0), np.float32), y0[:batch], constant=constant)
        assert np.array_equal(got, y0[:batch])


def test_n_equals_one_and_m_zero() -> None:
    rng = np.random.default_rng(2)
    w = random_csr(rng, 6, 1, 1.0)
    x = rng.standard_normal((4, 1)).astype(np.float32)
    assert_matches(*run_case(w, x, None, constant=True))
    x = rng.standard_normal((2, 3)).astype(np.float32)
    got, _, _ = run_case(random_csr(rng, 0, 3, 0.5), x, None, constant=True)
    assert got.shape == (2, 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("density", [0.02, 0.05, 0.2])
def test_a_realistic_layer_at_several_batch_sizes(mode: str, density: float) -> None:
    """The benchmark's shape (scaled down): long rows exercise the unrolled and masked vector paths, and (on
    AVX-512 CPUs) register tiles with 1-4 steps, integer tiles (VBMI + VNNI) with 1-3 and a rest; all three ops,
    32- and 16-bit columns and 8-bit column gaps."""
    rng = np.random.default_rng(3)
    w = random_csr(rng, 260, 1300, density)
    for batch in (1, 3, 8, 13):  # SparseMatVecInteger: 4 rows per pass over the tiles, then 3, 2 or 1
        x = rng.standard_normal((batch, 1300)).astype(np.float32)
        y0 = rng.standard_normal((batch, 260)).astype(np.float32)
        for col_dtype in COL_DTYPES:
            assert_matches(*run_case(w, x, y0, constant=True, col_dtype=col_dtype, mode=mode))


@pytest.mark.parametrize("mode", MODES)
def test_more_than_65536_columns(mode: str) -> None:
    """Past 16-bit columns the re-laid-out W keeps 32-bit ones (the file's col_idx: int32, or uint8 gaps, most of
    them over 255 here, bridged by zero entries)."""
    rng = np.random.default_rng(8)
    w = random_csr(rng, 24, 70_000, 0.002)
    w = sp.csr_matrix(w + sp.csr_matrix(([1.0], ([3], [69_999])), shape=w.shape, dtype=np.float32))
    for batch in (1, 3):
        x = rng.standard_normal((batch, 70_000)).astype(np.float32)
        for col_dtype in (np.int32, np.uint8):
            assert_matches(*run_case(w, x, None, constant=True, mode=mode, col_dtype=col_dtype))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("broadcast", [False, True])
def test_batch_products_split_over_the_intra_op_pool(threads: int, broadcast: bool) -> None:
    """Batch >= 2 and nnz >= 16384: W's rows in parts on onnxruntime's thread pool (KernelContext_ParallelFor),
    every batch size around the 16-row blocks, empty rows included, Y0 per row or broadcast (SparseMatVecInteger
    too: its float product on X - x_zero_point, then the scaling)."""
    rng = np.random.default_rng(threads)
    w = random_csr(rng, 700, 903, 0.05)
    keep = np.ones(700)
    keep[5:40] = 0  # a run of empty rows inside a part
    w = (sp.diags(keep) @ w).tocsr()
    w.eliminate_zeros()
    assert w.nnz >= 16384
    for batch in (2, 7, 16, 17, 33):
        x = rng.standard_normal((batch, 903)).astype(np.float32)
        y0 = rng.standard_normal((700,) if broadcast else (batch, 700)).astype(np.float32)
        for constant in (True, False):
            assert_matches(*run_case(w, x, y0, constant=constant, threads=threads))
        assert_matches(*run_case(w, x, y0, constant=True, threads=threads, mode="integer"))


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_capped_kernels_match_scipy_too(isa: str) -> None:
    """DKP_OPS_ISA=generic forces the baseline kernels (the ones ARM and old x86 run), =avx2 the AVX2 ones without
    the AVX-512 register tiles; checked in a child process."""
    env = {**os.environ, "DKP_OPS_ISA": isa}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ops_graphs.py"), "numerics", "--cases", "80", "--seed", "7"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "80 cases match scipy" in proc.stdout


@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("batch", [1, 8])
def test_non_finite_x_reaches_only_rows_that_use_it(constant: bool, batch: int) -> None:
    """Padding in the re-laid-out W must add exact zeros: inf in a column leaves rows without it finite."""
    rng = np.random.default_rng(4)
    w = random_csr(rng, 50, 20, 0.1, empty_rows=0.2)
    x = rng.standard_normal((batch, 20)).astype(np.float32)
    x[:, 0] = np.inf
    x[:, 1] = np.nan
    got, expected, _ = run_case(w, x, None, constant=constant)
    uses = (w[:, :2] != 0).toarray().any(axis=1)
    assert uses.any() and not uses.all()
    assert np.all(np.isfinite(got[:, ~uses]))
    assert not np.any(np.isfinite(got[:, uses]))
    np.testing.assert_allclose(got[:, ~uses], expected[:, ~uses], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("density", [0.05, 0.2])
def test_non_finite_x_in_register_tiles(density: float, int8: bool) -> None:
    """At these densities W goes (on AVX-512 CPUs) partly into 16 x 32 register tiles, whose empty lanes must add
    exact zeros too; explicit zeros stored in W still multiply x like scipy does."""
    rng = np.random.default_rng(6)
    w = random_csr(rng, 90, 700, density, empty_rows=0.1)
    w.data[::97] = 0.0  # explicit zeros
    x = rng.standard_normal((1, 700)).astype(np.float32)
    x[:, [3, 40, 333]] = [np.inf, -np.inf, np.nan]
    got, expected, _ = run_case(w, x, None, constant=True, mode="int8" if int8 else "float")
    finite = np.isfinite(expected)
    assert finite.any() and not finite.all()
    assert np.array_equal(np.isfinite(got), finite)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mode", ["float", "int8"])
def test_a_few_rows_of_x_through_the_register_tiles(mode: str, threads: int) -> None:
    """2 to 5 rows of X go (on AVX-512 CPUs) through W's register tiles in one pass and the SELL-8 rest on X
    transposed, windows of 256 rows of W on the pool: rows past the last whole tile and window, Y0 per row or
    broadcast, inf / NaN in X and explicit zeros in W (which multiply like scipy's)."""
    rng = np.random.default_rng(12 + threads)
    w = random_csr(rng, 587, 1003, 0.08, empty_rows=0.05).tolil()
    w[[7, 300]] = rng.standard_normal((2, 1003))  # full rows: most of them overflows the tiles into the rest
    w = w.tocsr().astype(np.float32)
    w.data[::89] = 0.0
    assert w.nnz >= 16384
    for batch in (2, 3, 4, 5, 6):
        x = rng.standard_normal((batch, 1003)).astype(np.float32)
        for y0 in (rng.standard_normal((batch, 587)).astype(np.float32), rng.standard_normal(587).astype(np.float32)):
            assert_matches(*run_case(w, x, y0, constant=True, threads=threads, mode=mode))
        x[batch - 1, [0, 500, 1002]] = [np.inf, np.nan, -np.inf]
        got, expected, _ = run_case(w, x, None, constant=True, threads=threads, mode=mode)
        finite = np.isfinite(expected)
        assert finite[: batch - 1].all() and finite[batch - 1].any() and not finite[batch - 1].all()
        assert np.array_equal(np.isfinite(got), finite)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)


def test_concurrent_runs_of_one_session() -> None:
    """One kernel object serves concurrent Run calls (per-thread scratch): every thread gets its own right answer."""
    rng = np.random.default_rng(5)
    w = random_csr(rng, 300, 200, 0.1)
    model = model_bytes({"X": np.ones((1, 200), np.float32), **csr_arrays(w)}, ("X", *CSR_NAMES), constant=CSR_NAMES)
    sess = session(model)
    xs = [rng.standard_normal((batch, 200)).astype(np.float32) for batch in (1, 8, 1, 5, 16, 1, 3, 1) * 4]

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {"X": x})[0]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, xs))
    for x, got in zip(xs, results):
        assert_matches(got, *reference(w, x, None))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kron_constant", [True, False])
def test_kronecker_half(mode: str, kron_constant: bool) -> None:
    """The optional B, C_T inputs add kron(B, C) @ x (float x; SparseMatVecInteger's from X_kron) to the sparse
    product: every batch path (1 row, blocks of rows, several blocks), Y0 none / per row / broadcast, the shapes of
    a doped layer and degenerate ones (N1 = 1, M2 = 1, widths that are no multiple of the vector lanes, or of half
    of them, and wider than one block of vectors)."""
    rng = np.random.default_rng(11)
    for (m1, n1), (m2, n2), density in (((52, 65), (50, 20), 0.05), ((3, 1), (1, 7), 0.3), ((5, 4), (9, 3), 0.0),
                                        ((17, 6), (2, 33), 0.1), ((6, 5), (70, 9), 0.05)):
        w = random_csr(rng, m1 * m2, n1 * n2, density)
        kron = (rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2)))
        for batch, y0_kind in ((1, "full"), (3, "none"), (8, "broadcast"), (17, "full")):
            x = rng.standard_normal((batch, n1 * n2)).astype(np.float32)
            y0 = {"none": None, "full": rng.standard_normal((batch, m1 * m2)),
                  "broadcast": rng.standard_normal(m1 * m2)}[y0_kind]
            y0 = None if y0 is None else y0.astype(np.float32)
            assert_matches(*run_case(w, x, y0, constant=True, mode=mode, kron=kron, kron_constant=kron_constant))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_kronecker_half_split_over_the_intra_op_pool(mode: str, threads: int) -> None:
    """At batch >= 8 the Kronecker half runs in parts of rows of X on onnxruntime's pool (and SparseMatVecInteger's
    tiles in blocks of 4 rows): parts of unequal size, with W's products split too, each row checked."""
    rng = np.random.default_rng(12)
    (m1, n1), (m2, n2) = (26, 13), (20, 10)
    w = random_csr(rng, m1 * m2, n1 * n2, 0.3)
    assert w.nnz >= 16384  # large enough for the float products' row parts
    kron = (rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2)))
    for batch in (7, 8, 9, 13, 21):
        x = rng.standard_normal((batch, n1 * n2)).astype(np.float32)
        y0 = rng.standard_normal((batch, m1 * m2)).astype(np.float32)
        assert_matches(*run_case(w, x, y0, constant=True, mode=mode, kron=kron, threads=threads))


def test_integer_rows_too_long_for_int32_lanes() -> None:
    """16 rows of 67,500 products of -127 x 255 (12 per 128 columns: what the integer tiles would take) sum below
    -2^31: the tiles' int32 lanes would wrap, so such a W stays out of them and the op gives the float64 sum (up to
    float32 rounding) on every CPU."""
    rows, tiles, per_tile = 16, 5625, 12
    rng = np.random.default_rng(5)
    cols = np.concatenate([np.sort(rng.choice(128, per_tile, replace=False)) + 128 * t for t in range(tiles)])
    nnz = cols.size
    arrays = {"X": np.full((1, 128 * tiles), 255, np.uint8),
              "row_ptr": (np.arange(rows + 1) * nnz).astype(np.int32),
              "col_idx": np.tile(cols, rows).astype(np.int32), "values": np.full(rows * nnz, -127, np.int8),
              "row_scale": np.full(rows, 0.5, np.float32), "x_scale": np.asarray(0.25, np.float32),
              "x_zero_point": np.asarray(0, np.uint8)}
    names = ["X", "row_ptr", "col_idx", "values", "row_scale", "x_scale", "x_zero_point"]
    sess = session(model_bytes(arrays, names, constant=names[1:5], op_type="SparseMatVecInteger"))
    (got,) = sess.run(None, {k: arrays[k] for k in ("X", "x_scale", "x_zero_point")})
    # float32 sums of 67,500 terms of one sign: ~2e-4 relative; a wrapped int32 lane is off by 2^32 * 0.125
    np.testing.assert_allclose(got, np.full((1, rows), 0.25 * 0.5 * -127 * 255 * nnz), rtol=1e-3)


@pytest.mark.parametrize("batch", [1, 3, 4, 9])
@pytest.mark.parametrize("values", ["extremes", "halves"])
def test_integer_products_at_the_int16_limit(batch: int, values: str) -> None:
    """X = 255 with a zero point of 0 and int8 values at the ends of their range: on AVX2 CPUs the integer tiles
    sum two products of a row in int16 (vpmaddubsw), which saturates past 32767 (2 x 255 x 127 would); the tiles
    pair only values of opposite signs, or two with |a| + |b| <= 128 (64 + 64 and -64 - 64 included here), so every
    row still gives its exact integer sum, on every CPU."""
    rng = np.random.default_rng(11 + batch)
    rows, n = 64, 300
    w = sp.random(rows, n, density=0.25, format="csr", random_state=rng, dtype=np.float32)
    choices = {"extremes": [127, -128, 127, 127], "halves": [64, -64, 127, 64, -128, 1]}[values]
    q = rng.choice(np.asarray(choices, np.int8), w.nnz).astype(np.int8)
    x = np.full((batch, n), 255, np.uint8)
    x[:, ::7] = rng.integers(0, 256, (batch, len(range(0, n, 7))))
    row_scale = rng.uniform(0.5, 2.0, rows).astype(np.float32)
    arrays = {"X": x, "row_ptr": w.indptr.astype(np.int32), "col_idx": w.indices.astype(np.int32), "values": q,
              "row_scale": row_scale, "x_scale": np.asarray(0.125, np.float32),
              "x_zero_point": np.asarray(0, np.uint8)}
    names = ["X", "row_ptr", "col_idx", "values", "row_scale", "x_scale", "x_zero_point"]
    sess = session(model_bytes(arrays, names, constant=names[1:5], op_type="SparseMatVecInteger"))
    (got,) = sess.run(None, {k: arrays[k] for k in ("X", "x_scale", "x_zero_point")})
    scale = 0.125 * row_scale[None, :].astype(np.float64)
    qw = sp.csr_matrix((q.astype(np.float64), w.indices, w.indptr), shape=w.shape)
    expected = scale * (qw @ x.T.astype(np.float64)).T
    magnitude = scale * (abs(qw) @ x.T.astype(np.float64)).T  # what float32 rounding is relative to
    # float32 sums: ~1e-7 of the magnitude (~3e5 per row); one saturated pair is off by >= 0.06 * 3e3
    assert np.all(np.abs(got - expected) <= 2e-6 * magnitude)


@st.composite
def quantization_inputs(draw):
    """An X for the node's own quantization: random scales and signs, all zeros, one sign only, exact ties (X in
    halves over a range of 255, so scale 1: every value sits midway between two uint8 steps, the zero point too),
    and values at the rounding boundaries of a scale with no exact reciprocal (where x / scale and x * (1 / scale)
    round apart)."""
    batch = draw(st.integers(1, 4)) if draw(st.integers(0, 9)) else 0
    n = draw(st.integers(1, 70))  # around the 4, 8 and 16 lanes of the vector bodies, with tails
    kind = draw(st.sampled_from(["normal", "zeros", "positive", "negative", "ties", "boundaries", "one value"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((batch, n)) * 10.0 ** draw(st.integers(-30, 30))
    if kind == "zeros":
        x = np.zeros((batch, n))
    elif kind == "positive":
        x = np.abs(x)
    elif kind == "negative":
        x = -np.abs(x)
    elif kind == "ties":
        lo = -float(rng.integers(0, 255)) - 0.5  # a zero point of k + 0.5: even k or odd k, drawn
        x = lo + rng.integers(0, 256, (batch, n))
        x.flat[:2] = [lo, lo + 255][: x.size]  # the range 255: scale exactly 1
    elif kind == "boundaries":
        lo, hi = np.float32(-rng.uniform(0.01, 10)), np.float32(rng.uniform(0.01, 10))
        scale = np.float32((hi - lo) / np.float32(255))
        mid = (np.float32(rng.integers(-255, 256, 64) + 0.5) * scale).astype(np.float32)
        near = np.concatenate([mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))])
        near = near[(near > lo) & (near < hi)]
        x = np.resize(np.concatenate([[lo, hi], rng.permutation(near)]), (batch, n))
    elif kind == "one value":
        x = np.full((batch, n), x.flat[0] if x.size else 1.0)
    w = random_csr(rng, draw(st.integers(1, 40)), n, draw(st.sampled_from([0.05, 0.3, 1.0])), empty_rows=0.2)
    return w, x.astype(np.float32), draw(st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantization_inputs())
def test_float_x_quantized_as_onnxruntime_does(case) -> None:
    """SparseMatVecInteger on a float X quantizes it as onnxruntime's DynamicQuantizeLinear does, bit for bit: the
    node's Y equals that of the same node fed DynamicQuantizeLinear's uint8 X, scale and zero point."""
    from ops_graphs import INT8_NAMES, X_QUANT_NAMES, ort_dynamic_quantize, quantize_rows

    w, x, constant = case
    arrays = {"X": x, **csr_arrays(w)}
    arrays["values"], arrays["row_scale"], _ = quantize_rows(w)
    consts = INT8_NAMES if constant else ()
    floats = session(model_bytes(arrays, ("X", *INT8_NAMES), consts, op_type="SparseMatVecInteger"))
    q, scale, zp = ort_dynamic_quantize(x)
    uint8 = session(model_bytes({**arrays, "X": q, "x_scale": scale, "x_zero_point": zp},
                                ("X", *INT8_NAMES, *X_QUANT_NAMES), consts, op_type="SparseMatVecInteger"))
    feeds = {k: v for k, v in arrays.items() if k in ("X", *INT8_NAMES) and k not in consts}
    (got,) = floats.run(None, feeds)
    (want,) = uint8.run(None, {**feeds, "X": q, "x_scale": scale, "x_zero_point": zp})
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_x_with_a_non_finite_value_gives_nan(batch: int, bad: float) -> None:
    """No scale quantizes NaN or an infinity (onnxruntime's DynamicQuantizeLinear maps NaN to the zero point): the
    node's Y is NaN everywhere, the Kronecker half included, and a finite X in the next call is right again."""
    rng = np.random.default_rng(13)
    w = random_csr(rng, 30, 20, 0.2)
    kron = (rng.standard_normal((3, 4)), rng.standard_normal((10, 5)))
    x = rng.standard_normal((batch, 20)).astype(np.float32)
    x[-1, 7] = bad
    with np.errstate(invalid="ignore"):  # the test's reference of a non-finite X
        got, _, _ = run_case(w, x, None, constant=True, mode="dynamic", kron=kron)
    assert np.isnan(got).all()
    x[-1, 7] = 0.5
    assert_matches(*run_case(w, x, None, constant=True, mode="dynamic", kron=kron))


@pytest.mark.parametrize("kron_constant", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_kronecker_half_on_int8_b_and_quantized_x(kron_constant: bool, threads: int) -> None:
    """SparseMatVecInteger on a float X: the Kronecker half reads X's quantization too, and where B's rows are on an
    int8 grid (an int8 file's B) B @ X_hat runs on the integers. Against float64 on X_hat: B on the grid and B a
    float32 step off it (the float path), shapes with N1 and M1 no multiple of 4 and batches of 1 to 4 zmm widths
    of B @ X's columns and more."""
    from _onnx_models import int8_rows

    rng = np.random.default_rng(14)
    for (m1, n1), (m2, n2) in (((52, 65), (50, 20)), ((7, 3), (5, 9)), ((1, 1), (3, 17)), ((9, 130), (2, 4))):
        w = random_csr(rng, m1 * m2, n1 * n2, 0.1)
        b = int8_rows(rng.standard_normal((m1, n1))).astype(np.float32)
        c = rng.standard_normal((m2, n2))
        off_grid = b.copy()
        off_grid.flat[0] = np.nextafter(off_grid.flat[0], np.float32(np.inf))
        for batch in (1, 2, 3, 4, 8, 17):
            x = rng.standard_normal((batch, n1 * n2)).astype(np.float32)
            for kron_b in (b, off_grid):
                assert_matches(*run_case(w, x, None, constant=True, mode="dynamic", kron=(kron_b, c),
                                         kron_constant=kron_constant, threads=threads))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_b_reaches_its_rows_on_the_integer_path_too(bad: float) -> None:
    """A non-finite entry in a B whose other rows lie on an int8 grid, alone in a row of zeros (a NaN drops out of
    max |row|): the Kronecker half keeps it, on exactly the rows of Y that B's row feeds."""
    from _onnx_models import int8_rows

    rng = np.random.default_rng(15)
    (m1, n1), (m2, n2) = (4, 6), (3, 5)
    b = int8_rows(rng.standard_normal((m1, n1))).astype(np.float32)
    b[1] = 0.0
    b[1, 2] = bad  # the rest of its row 0: max |row| without the NaN is 0, a row of zeros to a careless check
    w = random_csr(rng, m1 * m2, n1 * n2, 0.0)
    x = rng.standard_normal((2, n1 * n2)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        got, _, _ = run_case(w, x, None, constant=True, mode="dynamic", kron=(b, rng.standard_normal((m2, n2))))
    fed = np.zeros(m1 * m2, bool)
    fed[m2:2 * m2] = True  # block row 1 of kron(B, C)
    assert not np.isfinite(got[:, fed]).any() and np.isfinite(got[:, ~fed]).all()
