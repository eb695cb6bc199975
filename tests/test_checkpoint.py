"""Checkpoint files: exact round trips through both readers, clear errors for bad files, no code ever executed."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dkp_deploy.checkpoint import FORMAT, VERSION, load_spec, save
from dkp_deploy.errors import InputError
from dkp_deploy.spec import CSR, LSTM, Activation, DopedMatrix, Embedding, Linear, LSTMLayer, ModelSpec

torch = pytest.importorskip("torch")

READERS = [pytest.param(True, id="torch"), pytest.param(False, id="torch_free")]
RNG = np.random.default_rng(0)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _sparse(m: int, n: int, density: float) -> CSR:
    return CSR.from_dense(np.where(RNG.random((m, n)) < density, _f32(m, n), 0).astype(np.float32))


def _matrix(structure: str, m: int, n: int, density: float = 0.2) -> DopedMatrix:
    factors = {
        "kron": lambda: {"B": _f32(2, n // 2), "C": _f32(m // 2, 2)},
        "lmf": lambda: {"U": _f32(m, 2), "V": _f32(2, n)},
        "hmd": lambda: {"W_top": _f32(2, n), "U": _f32(m - 2, 2), "V": _f32(2, n)},
        "none": dict,
        "dense": lambda: {"W": _f32(m, n)},
    }[structure]()
    sparse = None if structure == "dense" else _sparse(m, n, density)
    return DopedMatrix((m, n), structure, factors, sparse)


def _mlp() -> ModelSpec:
    blocks = [
        Linear("fc1", _matrix("kron", 8, 6), _f32(8)),
        Activation("act1", "relu"),
        Linear("fc2", _matrix("lmf", 6, 8), None),
        Activation("act2", "tanh"),
        Linear("fc3", _matrix("hmd", 8, 6), _f32(8)),
        Activation("act3", "gelu"),
        Linear("fc4", _matrix("none", 4, 8), _f32(4)),
        Activation("act4", "sigmoid"),
        Linear("fc5", _matrix("kron", 4, 4, density=0.0), _f32(4)),  # W_s present but empty
        Linear("fc6", DopedMatrix((4, 4), "lmf", {"U": _f32(4, 1), "V": _f32(1, 4)}), _f32(4)),  # no W_s at all
        Linear("out", _matrix("dense", 3, 4), _f32(3)),
        Activation("act5", "identity"),
    ]
    return ModelSpec("mlp", blocks, {"module": "DopedMLP", "layers": {"fc1": {"cmr": 0.5}}}, {"note": "test"})


def _lstm(batch_first: bool) -> ModelSpec:
    i, h = 6, 4
    layers = [
        LSTMLayer(_matrix("kron", 4 * h, i + h), _f32(4 * h)),
        LSTMLayer(_matrix("hmd", 4 * h, 2 * h), _f32(4 * h)),
    ]
    return ModelSpec("lstm", [LSTM("lstm", i, h, layers, batch_first=batch_first)], {"dropout": 0.1})


def _lstm_lm() -> ModelSpec:
    v, e, h = 11, 6, 4
    layers = [
        LSTMLayer(_matrix("lmf", 4 * h, e + h), _f32(4 * h)),
        LSTMLayer(_matrix("none", 4 * h, 2 * h), _f32(4 * h)),
    ]
    blocks = [
        Embedding("embedding", _f32(v, e)),
        LSTM("lstm", e, h, layers),
        Linear("decoder", _matrix("dense", v, h), _f32(v)),
    ]
    return ModelSpec("lstm_lm", blocks, {"module": "DopedLSTMLM", "tie_weights": False})


SPECS = {"mlp": _mlp, "lstm": lambda: _lstm(False), "lstm_batch_first": lambda: _lstm(True), "lstm_lm": _lstm_lm}


def _arrays(spec: ModelSpec) -> dict[str, Any]:
    """Every array and scalar field of a spec by a stable name (what a round trip must keep bit for bit)."""
    out: dict[str, Any] = {"arch": spec.arch}

    def matrix(prefix: str, w: DopedMatrix) -> None:
        out[f"{prefix}.shape"] = tuple(w.shape)
        out[f"{prefix}.structure"] = w.structure
        out.update({f"{prefix}.{k}": v for k, v in w.factors.items()})
        if w.sparse is not None:
            out.update({f"{prefix}.W_s.{k}": getattr(w.sparse, k) for k in ("row_ptr", "col_idx", "values")})

    for b in spec.blocks:
        out[f"{b.name}.type"] = type(b).__name__
        if isinstance(b, Linear):
            matrix(b.name, b.weight)
            out[f"{b.name}.bias"] = b.bias
        elif isinstance(b, Activation):
            out[f"{b.name}.kind"] = b.kind
        elif isinstance(b, LSTM):
            out[f"{b.name}.sizes"] = (b.input_size, b.hidden_size, b.batch_first)
            for k, layer in enumerate(b.layers):
                matrix(f"{b.name}.{k}", layer.weight)
                out[f"{b.name}.{k}.bias"] = layer.bias
        else:
            out[f"{b.name}.weight"] = b.weight
    return out


def _assert_identical(a: ModelSpec, b: ModelSpec) -> None:
    xa, xb = _arrays(a), _arrays(b)
    assert list(xa) == list(xb)
    for k, va in xa.items():
        vb = xb[k]
        if isinstance(va, np.ndarray):
            assert isinstance(vb, np.ndarray) and va.dtype == vb.dtype and va.shape == vb.shape, k
            assert va.tobytes() == vb.tobytes(), k
        else:
            assert va == vb, k
    assert a.config == b.config


# -- round trips ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_round_trip_is_bit_exact_through_both_readers(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]()
    path = tmp_path / "model.pt"
    save(spec, path)
    with_torch = load_spec(path, use_torch=True)
    without = load_spec(path, use_torch=False)
    _assert_identical(spec, with_torch)
    _assert_identical(spec, without)
    assert with_torch.metadata == without.metadata
    meta = with_torch.metadata
    assert meta["tool"] == "dkp-deploy" and isinstance(meta["tool_version"], str)
    assert all(meta[k] == v for k, v in spec.metadata.items())  # the caller's metadata is kept
    assert meta["compression_factor"] == pytest.approx(spec.summary()["compression_factor"])
    for layer, w in spec.matrices().items():
        assert meta["layers"][layer]["nnz"] == w.nnz
        assert meta["layers"][layer]["compression_factor"] == pytest.approx(w.compression_factor())


def test_file_is_plain_weights_only_and_deterministic(tmp_path: Path) -> None:
    spec = _mlp()
    save(spec, tmp_path / "a.pt")
    save(spec, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == VERSION and raw["arch"] == "mlp"
    assert set(raw) == {"format", "version", "arch", "blocks", "config", "metadata"}
    ws = raw["blocks"][0]["weight"]["W_s"]
    assert ws["row_ptr"].dtype == torch.int32 and ws["col_idx"].dtype == torch.int32
    assert ws["values"].dtype == torch.float32
    json.dumps(raw["config"])  # plain values only
    json.dumps(raw["metadata"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temporary file left behind


def test_reader_imports_and_works_without_torch(tmp_path: Path) -> None:
    """The deploy side: a process where `import torch` fails reads the file to the same spec, bit for bit."""
    spec = _lstm_lm()
    path = tmp_path / "lm.pt"
    save(spec, path)
    code = (
        "import pickle, sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "from dkp_deploy.checkpoint import load_spec\n"
        f"spec = load_spec({str(path)!r})\n"
        "sys.stdout.buffer.write(pickle.dumps(spec))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    loaded = pickle.loads(out.stdout)  # our own child process: trusted
    _assert_identical(spec, loaded)
    assert loaded.metadata == load_spec(path, use_torch=True).metadata


def test_save_refuses_a_bad_spec_and_leaves_no_file(tmp_path: Path) -> None:
    spec = _mlp()
    spec.blocks[0].bias[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        save(spec, tmp_path / "bad.pt")
    unsorted = _mlp()
    row_ptr = np.array([0] + [2] * 8, np.int32)  # row 0 holds columns 3 then 1
    unsorted.blocks[0].weight.sparse = CSR((8, 6), row_ptr, np.int32([3, 1]), np.float32([1, 2]))
    with pytest.raises(InputError, match="not strictly increasing"):
        save(unsorted, tmp_path / "unsorted.pt")
    with pytest.raises(InputError, match="does not exist"):
        save(_mlp(), tmp_path / "no_dir" / "m.pt")
    assert list(tmp_path.iterdir()) == []


# -- bad files ------------------------------------------------------------------------------------------------


def _raw(tmp_path: Path) -> dict[str, Any]:
    save(_mlp(), tmp_path / "good.pt")
    return torch.load(tmp_path / "good.pt", weights_only=True)


def _fc1(raw: dict[str, Any]) -> dict[str, Any]:
    return raw["blocks"][0]["weight"]


def _set(path: list[Any], value: Any):
    def edit(raw: dict[str, Any]) -> None:
        obj = raw
        for key in path[:-1]:
            obj = obj[key]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value(obj[path[-1]]) if callable(value) else value

    return edit


def _values(fn):
    return _set(["blocks", 0, "weight", "W_s", "values"], fn)


W_S = ["blocks", 0, "weight", "W_s"]
EDITS = {
    "newer_version": (
        _set(["version"], 3),
        r"newer dkp-deploy \(format version 3\); this reader supports up to 2: upgrade",
    ),
    "version_zero": (_set(["version"], 0), "unknown checkpoint format version 0"),
    "version_string": (_set(["version"], "1"), "unknown checkpoint format version '1'"),
    "wrong_format_tag": (_set(["format"], "something-else"), "not a dkp-deploy checkpoint"),
    "extra_top_field": (_set(["extra"], 1), "unexpected field\\(s\\) 'extra'"),
    "missing_blocks": (_set(["blocks"], KeyError), r"missing field\(s\) \['blocks'\]"),
    "unknown_arch": (_set(["arch"], "gru"), "unknown architecture 'gru'"),
    "unknown_block": (_set(["blocks", 1, "type"], "conv"), "unknown block type 'conv'"),
    "unknown_structure": (_set(["blocks", 0, "weight", "structure"], "tt"), "unknown structure 'tt'"),
    "unknown_activation": (_set(["blocks", 1, "kind"], "swish"), "unknown activation 'swish'"),
    "missing_tensor": (
        _set(["blocks", 0, "weight", "factors", "C"], KeyError),
        r"fc1.weight: missing tensor\(s\) \['C'\]",
    ),
    "extra_tensor": (
        _set(["blocks", 0, "weight", "factors", "D"], torch.zeros(2, 2)),
        "unexpected tensor\\(s\\) 'D' for structure 'kron'",
    ),
    "missing_bias": (_set(["blocks", 0, "bias"], KeyError), r"fc1: missing field\(s\) \['bias'\]"),
    "missing_csr_part": (_set([*W_S, "col_idx"], KeyError), r"W_s: missing field\(s\) \['col_idx'\]"),
    "float64_factor": (
        _set(["blocks", 0, "weight", "factors", "B"], lambda t: t.double()),
        "fc1.weight.B: dtype float64, expected float32",
    ),
    "int64_row_ptr": (_set([*W_S, "row_ptr"], lambda t: t.long()), "row_ptr: dtype int64, expected int32"),
    "bfloat16_bias": (
        _set(["blocks", 0, "bias"], lambda t: t.bfloat16()),
        "fc1.bias: dtype bfloat16, expected float32",
    ),
    "factor_not_a_tensor": (
        _set(["blocks", 0, "weight", "factors", "B"], [[1.0]]),
        "expected a float32 tensor, found list",
    ),
    "factor_3d": (_set(["blocks", 0, "weight", "factors", "B"], lambda t: t[None]), "fc1.weight.B: 3-D"),
    "factor_shape": (
        _set(["blocks", 0, "weight", "factors", "B"], lambda t: t[:, :2]),
        "factor shapes .* do not make a 8 x 6 kron",
    ),
    "bias_shape": (_set(["blocks", 0, "bias"], lambda t: t[:3]), r"fc1.bias: shape \(3,\), expected \(8,\)"),
    "matrix_shape_field": (_set(["blocks", 0, "weight", "shape"], [8, -6]), r"shape: -6 is below 0"),
    "widths_do_not_chain": (_set(["blocks", 2, "weight", "shape"], [6, 7]), "factor shapes|takes 7 features"),
    "row_ptr_length": (_set([*W_S, "row_ptr"], lambda t: t[:-1]), "row_ptr: length 8, expected rows \\+ 1 = 9"),
    "row_ptr_decreasing": (_set([*W_S, "row_ptr"], lambda t: t.flip(0)), "row_ptr: first entry|not non-decreasing"),
    "col_idx_out_of_range": (_set([*W_S, "col_idx"], lambda t: t + 6), r"col_idx: index out of range \[0, 6\)"),
    "col_idx_duplicate": (
        _set([*W_S, "col_idx"], lambda t: torch.zeros_like(t)),
        "not strictly increasing within a row",
    ),
    "values_short": (_values(lambda t: t[:-1]), "row_ptr ends at"),
    "nan_value": (
        _values(lambda t: torch.where(torch.arange(len(t)) == 0, torch.tensor(float("nan")), t)),
        "NaN or inf",
    ),
    "inf_factor": (
        _set(["blocks", 0, "weight", "factors", "C"], lambda t: t * float("inf")),
        "fc1.C' holds NaN or inf",
    ),
    "metadata_nnz": (
        _set(["metadata", "layers", "fc1", "nnz"], 999),
        "metadata for layer 'fc1' records .* inconsistent",
    ),
    "metadata_layers_missing": (_set(["metadata", "layers"], KeyError), "metadata.layers must list"),
    "config_holds_tensor": (_set(["config", "t"], torch.zeros(1)), "config.t: a ndarray where only plain values"),
    "config_not_dict": (_set(["config"], [1]), "config: expected dict"),
}


@pytest.mark.parametrize("use_torch", READERS)
@pytest.mark.parametrize("case", list(EDITS))
def test_inconsistent_file_is_one_clear_error(case: str, use_torch: bool, tmp_path: Path) -> None:
    edit, message = EDITS[case]
    raw = _raw(tmp_path)
    edit(raw)
    path = tmp_path / f"{case}.pt"
    torch.save(raw, path)
    with pytest.raises(InputError, match=message) as e:
        load_spec(path, use_torch=use_torch)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("use_torch", READERS)
def test_broadcast_tensor_is_refused_before_it_is_copied(use_torch: bool, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["blocks"][0]["weight"]["factors"]["B"] = torch.zeros(1).expand(10**6, 10**6)  # 4 TB if materialized
    torch.save(raw, tmp_path / "b.pt")
    with pytest.raises(InputError, match="more elements than its stored data"):
        load_spec(tmp_path / "b.pt", use_torch=use_torch)


@pytest.mark.parametrize("use_torch", READERS)
def test_tensors_sharing_storage_are_refused(use_torch: bool, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    factors = raw["blocks"][0]["weight"]["factors"]
    base = torch.cat([factors["B"].flatten(), factors["C"].flatten()])  # one storage behind both factors
    factors["B"], factors["C"] = base[:6].view(2, 3), base[6:].view(4, 2)
    torch.save(raw, tmp_path / "s.pt")
    with pytest.raises(InputError, match="two tensors share stored data"):
        load_spec(tmp_path / "s.pt", use_torch=use_torch)


@pytest.mark.parametrize("use_torch", READERS)
def test_shared_references_cannot_blow_up(use_torch: bool, tmp_path: Path) -> None:
    """A list referencing one list twice, 25 levels deep: 2**25 paths in a tiny file; refused at once."""
    raw = _raw(tmp_path)
    node: list[Any] = [1]
    for _ in range(25):
        node = [node, node]
    raw["config"]["bomb"] = node
    torch.save(raw, tmp_path / "dag.pt")
    with pytest.raises(InputError, match="shared or cyclic reference"):
        load_spec(tmp_path / "dag.pt", use_torch=use_torch)


@pytest.mark.parametrize("use_torch", READERS)
def test_bad_lstm_field(use_torch: bool, tmp_path: Path) -> None:
    save(_lstm(True), tmp_path / "l.pt")
    raw = torch.load(tmp_path / "l.pt", weights_only=True)
    raw["blocks"][0]["batch_first"] = 1
    torch.save(raw, tmp_path / "l.pt")
    with pytest.raises(InputError, match="lstm.batch_first: expected bool, found int"):
        load_spec(tmp_path / "l.pt", use_torch=use_torch)


def _write_not_a_checkpoint(kind: str, path: Path) -> str:
    if kind == "missing":
        return "no such file"
    if kind == "directory":
        path.mkdir()
        return "not a regular file"
    if kind == "empty":
        path.write_bytes(b"")
        return "not a dkp-deploy checkpoint"
    if kind == "text":
        path.write_text("hello, I am a text file\n")
        return "not a dkp-deploy checkpoint"
    if kind == "bare_pickle":
        path.write_bytes(pickle.dumps({"format": FORMAT, "version": 1}))
        return "a bare pickle, not a dkp-deploy checkpoint"
    if kind == "state_dict":
        torch.save({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, path)
        return r"a plain state_dict \(2 tensors\), not a dkp-deploy checkpoint"
    if kind == "list":
        torch.save([1, 2], path)
        return "not a dkp-deploy checkpoint"
    if kind == "other_zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("readme.txt", "hi")
        return "a zip file but not a torch checkpoint"
    raise AssertionError(kind)


@pytest.mark.parametrize("use_torch", READERS)
@pytest.mark.parametrize(
    "kind", ["missing", "directory", "empty", "text", "bare_pickle", "state_dict", "list", "other_zip"]
)
def test_not_a_checkpoint(kind: str, use_torch: bool, tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    message = _write_not_a_checkpoint(kind, path)
    with pytest.raises(InputError, match=message) as e:
        load_spec(path, use_torch=use_torch)
    assert str(e.value).startswith(f"{path}: ")


def _damage(kind: str, data: bytes, spec: ModelSpec) -> bytes:
    raw = bytearray(data)
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "multi_disk":  # torch writes zip64; its end-record locator now claims the archive spans 2 disks
        raw[data.rindex(b"PK\x06\x07") + 16] = 2
    elif kind == "flipped_weight":  # one bit of a stored tensor: only the zip's CRC can tell
        raw[data.index(spec.blocks[0].bias.tobytes()) + 1] ^= 0x10
    return bytes(raw)


@pytest.mark.parametrize("use_torch", READERS)
@pytest.mark.parametrize("kind", ["truncated", "multi_disk", "flipped_weight"])
def test_damaged_file(kind: str, use_torch: bool, tmp_path: Path) -> None:
    spec = _mlp()
    save(spec, tmp_path / "m.pt")
    (tmp_path / "m.pt").write_bytes(_damage(kind, (tmp_path / "m.pt").read_bytes(), spec))
    with pytest.raises(InputError, match="corrupted or truncated") as e:
        load_spec(tmp_path / "m.pt", use_torch=use_torch)
    assert str(e.value).startswith(f"{tmp_path / 'm.pt'}: ") and "\n" not in str(e.value)


# -- hostile files ----------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a shell command that creates `marker` (if a reader ever executes it)."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch {self.marker}",))
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("use_torch", READERS)
@pytest.mark.parametrize(
    "container", ["bare_pickle", "bare_pickle_p4", "torch_zip", "torch_zip_p4", "inside_checkpoint"]
)
@pytest.mark.parametrize("how", ["system", "open"])
def test_pickled_code_is_refused_and_never_runs(container: str, how: str, use_torch: bool, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _Payload(marker, how)
    path = tmp_path / "evil.pt"
    if container.startswith("bare_pickle"):
        path.write_bytes(pickle.dumps({"x": payload}, protocol=4 if container.endswith("p4") else 2))
    elif container.startswith("torch_zip"):
        torch.save({"x": payload}, path, pickle_protocol=4 if container.endswith("p4") else 2)
    else:
        raw = _raw(tmp_path)
        raw["config"]["hook"] = payload
        torch.save(raw, path)
    with pytest.raises(
        InputError, match="pickled code or objects that are not allowed .*nothing in it was executed"
    ) as e:
        load_spec(path, use_torch=use_torch)
    assert str(e.value).startswith(f"{path}: ")
    assert not marker.exists()


class _Builder:
    """An object pickled with BUILD (state set after construction): refused by the opcode scan."""

    def __reduce__(self):
        return (dict, (), {"a": 1})


def test_object_building_opcodes_are_refused(tmp_path: Path) -> None:
    torch.save({"x": _Builder()}, tmp_path / "b.pt")
    with pytest.raises(InputError, match=r"not allowed .*(builtins.dict|BUILD)"):
        load_spec(tmp_path / "b.pt", use_torch=False)
    with pytest.raises(InputError, match="not allowed"):
        load_spec(tmp_path / "b.pt", use_torch=True)


# -- random corruption --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "m.pt"
    save(ModelSpec("mlp", _mlp().blocks[:3]), path)
    return path.read_bytes()


def _load_or_input_error(data: bytes, path: Path, use_torch: bool) -> None:
    path.write_bytes(data)
    try:
        spec = load_spec(path, use_torch=use_torch)
    except InputError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        spec.check()


@pytest.mark.parametrize("use_torch", READERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_gives_only_input_error(good_bytes: bytes, use_torch: bool, data, tmp_path: Path) -> None:
    raw = bytearray(good_bytes)
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good_bytes) - 1), st.integers(1, 255)), max_size=8))
    for pos, xor in flips:
        if pos < len(raw):
            raw[pos] ^= xor
    _load_or_input_error(bytes(raw), tmp_path / "fuzz.pt", use_torch)


@pytest.mark.parametrize("use_torch", READERS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_pickle_corruption_gives_only_input_error(
    good_bytes: bytes, use_torch: bool, data, tmp_path: Path
) -> None:
    """Flip bytes inside data.pkl only (then rewrite a valid zip), so the unpicklers see the damage."""
    with zipfile.ZipFile(__import__("io").BytesIO(good_bytes)) as zf:
        records = {i.filename: zf.read(i) for i in zf.infolist()}
    name = next(n for n in records if n.endswith("/data.pkl"))
    pkl = bytearray(records[name])
    for pos, value in data.draw(
        st.lists(st.tuples(st.integers(0, len(pkl) - 1), st.integers(0, 255)), min_size=1, max_size=4)
    ):
        pkl[pos] = value
    records[name] = bytes(pkl)
    path = tmp_path / "fuzz.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for n, b in records.items():
            zf.writestr(n, b)
    _load_or_input_error(path.read_bytes(), path, use_torch)


# -- torch modules -----------------------------------------------------------------------------------------------


def test_sparse_block_round_trip_and_a_version_1_file(tmp_path: Path) -> None:
    """Format 2 keeps a DopedLinear's sparse_block; a version-1 file (no such key) still reads, as unstructured."""
    nn_mod = pytest.importorskip("dkp_deploy.nn")
    from dkp_deploy.checkpoint import load

    torch.manual_seed(0)
    lstm = nn_mod.DopedLSTM(12, 8, 2, sparse_block=(1, 4), density=0.2)
    save(lstm, tmp_path / "v2.pt")
    loaded = load(tmp_path / "v2.pt")
    assert [c.sparse_block for c in loaded.cells] == [(1, 4), (1, 4)]
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(lstm.cells, loaded.cells))
    raw = torch.load(tmp_path / "v2.pt", weights_only=True)
    assert raw["version"] == VERSION == 2
    raw["version"] = 1
    for cfg in raw["config"]["layers"].values():
        cfg.pop("sparse_block")
    torch.save(raw, tmp_path / "v1.pt")
    old = load(tmp_path / "v1.pt")
    assert [c.sparse_block for c in old.cells] == [None, None]
    v1, v2 = load_spec(tmp_path / "v1.pt", use_torch=False), load_spec(tmp_path / "v2.pt")
    for name, w in v2.matrices().items():  # the same tensors; only the config differs
        assert np.array_equal(v1.matrices()[name].dense(), w.dense()), name


def test_torch_module_round_trip(tmp_path: Path) -> None:
    nn_mod = pytest.importorskip("dkp_deploy.nn")
    from dkp_deploy.checkpoint import load

    torch.manual_seed(0)
    models = {
        "mlp": nn_mod.DopedMLP([6, 12, 8], "gelu", final_activation="sigmoid", density=0.25),
        "lstm": nn_mod.DopedLSTM(6, 4, 2, batch_first=True, density=0.2),
        "lm": nn_mod.DopedLSTMLM(20, 6, 6, 2, structure="lmf", rank=2, density=0.2),
    }
    inputs = {"mlp": torch.randn(3, 6), "lstm": torch.randn(2, 5, 6), "lm": torch.randint(0, 20, (5, 2))}
    for name, model in models.items():
        model.eval()
        path = tmp_path / f"{name}.pt"
        save(model, path)
        loaded = load(path)
        assert type(loaded) is type(model)
        _assert_identical(nn_mod.to_spec(model), nn_mod.to_spec(loaded))
        with torch.no_grad():
            a, b = model(inputs[name]), loaded(inputs[name])
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        assert torch.equal(a, b), name


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every key path into the nested dicts and lists of a raw checkpoint."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out = [path] if path else []
    for k, v in items:
        out += _leaves(v, (*path, k))
    return out


REPLACEMENTS = [
    "delete",
    None,
    0,
    -3,
    2**40,
    1.5,
    float("nan"),
    "x",
    True,
    [],
    {},
    [1, 2],
    {"a": 1},
    torch.zeros(3),
    torch.zeros(2, 2, dtype=torch.float64),
    torch.full((2, 3), float("inf")),
    torch.zeros(0, dtype=torch.int32),
    torch.full((3,), 100, dtype=torch.int32),
    torch.zeros(2, dtype=torch.bfloat16),
]


@pytest.mark.parametrize("use_torch", READERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_field_edits_give_only_input_error(use_torch: bool, data, tmp_path: Path) -> None:
    """Any field of a valid checkpoint replaced by a wrong value (or removed): an InputError or a valid spec."""
    spec = _lstm_lm() if data.draw(st.booleans(), label="lm") else _mlp()
    save(spec, tmp_path / "good.pt")
    raw = torch.load(tmp_path / "good.pt", weights_only=True)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        leaves = _leaves(raw)
        if not leaves:
            break
        path = data.draw(st.sampled_from(leaves), label="path")
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        value = data.draw(st.sampled_from(REPLACEMENTS), label="value")
        if isinstance(value, str) and value == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(value)  # fresh containers: no cycles through shared lists
    torch.save(raw, tmp_path / "edited.pt")
    _load_or_input_error((tmp_path / "edited.pt").read_bytes(), tmp_path / "edited.pt", use_torch)


# -- the audit's zip files: both readers refuse them, with the same message (issue 14) ---------------------------


def _flip_central_size(data: bytes) -> bytes:
    b = bytearray(data)
    eocd = b.rfind(b"PK\x05\x06")
    first = int.from_bytes(b[eocd + 16 : eocd + 20], "little")  # offset of the central directory
    b[first + 24] ^= 0x01  # the first entry's uncompressed size
    return bytes(b)


def _with_member(name: str):
    def edit(data: bytes) -> bytes:
        buf = __import__("io").BytesIO(data)
        with zipfile.ZipFile(buf, "a") as zf:
            zf.writestr(name, b"x")
        return buf.getvalue()

    return edit


ZIP_CASES = {
    "central_directory_size_flipped": (_flip_central_size, "sizes disagree"),
    "member_dotdot": (_with_member("../../x"), "outside the archive"),
    "member_absolute": (_with_member("/tmp/x"), "outside the archive"),
    "junk_prepended": (lambda data: os.urandom(1 << 20) + data, "data before the zip archive"),
}


@pytest.mark.parametrize("case", sorted(ZIP_CASES))
def test_both_readers_refuse_the_audit_zips_alike(case: str, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save(_mlp(), good)
    edit, words = ZIP_CASES[case]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(edit(good.read_bytes()))
    with pytest.raises(Exception):  # noqa: B017 - torch's own refusal: any exception type
        torch.load(bad, weights_only=True)
    messages = []
    for use_torch in (True, False):
        with pytest.raises(InputError) as e:
            load_spec(bad, use_torch=use_torch)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and words in messages[0] and "\n" not in messages[0]


@pytest.mark.parametrize("use_torch", READERS)
def test_meta_tensor_is_refused(use_torch: bool, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["blocks"][0]["bias"] = torch.empty(8, device="meta")
    torch.save(raw, tmp_path / "meta.pt")
    with pytest.raises(InputError):
        load_spec(tmp_path / "meta.pt", use_torch=use_torch)


@pytest.mark.parametrize("use_torch", READERS)
def test_declared_size_is_checked_before_allocating(use_torch: bool, tmp_path: Path) -> None:
    m, n = 2, 2**31 - 2
    row_ptr = np.array([0, 1, 1], np.int32)
    sparse = CSR((m, n), row_ptr, np.array([n - 1], np.int32), np.ones(1, np.float32))
    save(ModelSpec("mlp", [Linear("big", DopedMatrix((m, n), "none", {}, sparse), None)], {}, {}), tmp_path / "b.pt")
    with pytest.raises(InputError, match=r"layer 'big' declares a 2 x 2147483646 matrix.*limit"):
        load_spec(tmp_path / "b.pt", use_torch=use_torch)
    assert load_spec(tmp_path / "b.pt", use_torch=use_torch, max_memory=64 << 30).matrices()["big"].nnz == 1
