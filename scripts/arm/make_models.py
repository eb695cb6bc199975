"""x86 side of the ARM check: small doped models, converted, with feeds and float64 reference outputs.

Writes into --out, for every model: the converted file(s) (`NAME.onnx`, `NAME.tflite`) and `NAME.npz` holding
the feeds (`in/<input>`) and the float64 reference outputs of `dkp_deploy.reference` (`ref/<output>`), plus
`manifest.json` that `run_parity.py` (the aarch64 side, which needs nothing but numpy and a runtime) reads.
The native models are built directly as specs from seeded random factors (no torch); when torch is installed,
user-style torch models also go through the general path (`dkp_deploy.export`), with torch float64 references.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dkp_deploy import reference, signature
from dkp_deploy.quantize import dequantized_spec, matrix_input
from dkp_deploy.spec import CSR, LSTM, Activation, DopedMatrix, Embedding, Linear, LSTMLayer, ModelSpec

# Parity bound per output element, |arm - ref| <= ATOL + RTOL * |ref|: float32 arithmetic against float64 on
# small models lands around 1e-6; a wrong kernel, layout or index lands far above.
ATOL, RTOL = 1e-5, 1e-4


def _doped(rng: np.random.Generator, structure: str, m: int, n: int, density: float = 0.1, **dims: int) -> DopedMatrix:
    """A random W = structured part + W_s with about `density` of W_s's entries nonzero."""
    if structure == "kron":
        m1, n1 = dims["m1"], dims["n1"]
        factors = {"B": rng.standard_normal((m1, n1)), "C": rng.standard_normal((m // m1, n // n1))}
    elif structure == "lmf":
        factors = {"U": rng.standard_normal((m, dims["r"])), "V": rng.standard_normal((dims["r"], n))}
    elif structure == "dense":
        factors = {"W": rng.standard_normal((m, n))}
    else:
        factors = {}
    scale = 1.0 / np.sqrt(n)  # keeps activations O(1) so tanh / sigmoid are not saturated
    factors = {k: (v * scale ** (1.0 if structure != "kron" else 0.5)).astype(np.float32) for k, v in factors.items()}
    ws = np.where(rng.random((m, n)) < density, scale * rng.standard_normal((m, n)), 0.0).astype(np.float32)
    ws[0] = 0.0  # an empty row, the case a CSR kernel most often gets wrong
    weight = DopedMatrix((m, n), structure, factors, None if structure == "dense" else CSR.from_dense(ws))
    weight.check()
    return weight


def _bias(rng: np.random.Generator, n: int) -> np.ndarray:
    return (0.1 * rng.standard_normal(n)).astype(np.float32)


def mlp(rng: np.random.Generator) -> ModelSpec:
    blocks = [
        Linear("fc1", _doped(rng, "kron", 96, 64, m1=8, n1=8), _bias(rng, 96)),
        Activation("act1", "relu"),
        Linear("fc2", _doped(rng, "none", 48, 96, density=0.05), _bias(rng, 48)),
        Activation("act2", "tanh"),
        Linear("fc3", _doped(rng, "lmf", 16, 48, r=4), None),
    ]
    return ModelSpec("mlp", blocks)


def lstm(rng: np.random.Generator) -> ModelSpec:
    i_size, hidden = 32, 48
    layers = [
        LSTMLayer(_doped(rng, "kron", 4 * hidden, i_size + hidden, m1=16, n1=8), _bias(rng, 4 * hidden)),
        LSTMLayer(_doped(rng, "kron", 4 * hidden, 2 * hidden, m1=16, n1=8), _bias(rng, 4 * hidden)),
    ]
    return ModelSpec("lstm", [LSTM("lstm", i_size, hidden, layers)])


def lstm_lm(rng: np.random.Generator) -> ModelSpec:
    vocab, emb, hidden = 60, 32, 48
    layer = LSTMLayer(_doped(rng, "kron", 4 * hidden, emb + hidden, m1=16, n1=8), _bias(rng, 4 * hidden))
    blocks = [
        Embedding("embedding", (0.5 * rng.standard_normal((vocab, emb))).astype(np.float32)),
        LSTM("lstm", emb, hidden, [layer]),
        Linear("decoder", _doped(rng, "dense", vocab, hidden), _bias(rng, vocab)),
    ]
    return ModelSpec("lstm_lm", blocks)


def block_lstm(rng: np.random.Generator) -> ModelSpec:
    """The LSTM with W_s in whole aligned 1 x 4 blocks: TFLite's optimized sparse FULLY_CONNECTED kernel."""
    i_size, hidden = 32, 48
    layers = []
    for n in (i_size + hidden, 2 * hidden):
        w = _doped(rng, "kron", 4 * hidden, n, m1=16, n1=8)
        blocks = np.repeat(rng.random((4 * hidden, n // 4)) < 0.1, 4, axis=1)
        values = (rng.standard_normal((4 * hidden, n)) / np.sqrt(n)).astype(np.float32)
        w = DopedMatrix(w.shape, "kron", w.factors, CSR.from_mask(values, blocks))
        w.check()
        layers.append(LSTMLayer(w, _bias(rng, 4 * hidden)))
    return ModelSpec("lstm", [LSTM("lstm", i_size, hidden, layers)])


# name -> (spec builder, mode, {format: converter options}). The custom-op graphs are what the product ships;
# the portable one (standard ONNX ops only) is what runs where the ops library cannot be built.
MODELS: dict[str, tuple[Callable[[np.random.Generator], ModelSpec], str, dict[str, dict[str, Any]]]] = {
    "mlp": (mlp, "sequence", {"onnx": {}, "tflite": {}}),
    "lstm_step": (lstm, "step", {"onnx": {}, "tflite": {}}),
    "lstm_lm_step": (lstm_lm, "step", {"onnx": {}, "tflite": {}}),
    "lstm_seq": (lstm, "sequence", {"onnx": {}}),
    "lstm_portable": (lstm, "step", {"onnx": {"sparse_impl": "portable"}}),
    "block_lstm_step": (block_lstm, "step", {"onnx": {}, "tflite": {}}),
    # int8 doped files (ai.dkp::SparseMatVecInt8, column gaps), against the float64 run of their dequantized weights
    "mlp_int8": (mlp, "sequence", {"onnx": {"quantize": "int8"}}),
    "lstm_lm_step_int8": (lstm_lm, "step", {"onnx": {"quantize": "int8"}}),
    "lstm_portable_int8": (lstm, "step", {"onnx": {"sparse_impl": "portable", "quantize": "int8"}}),
    # int8-dynamic (ai.dkp::SparseMatVecInteger after DynamicQuantizeLinear: the float products of X - zero point on
    # aarch64), against the float64 run that quantizes each W_s input as the file does
    "mlp_int8dyn": (mlp, "sequence", {"onnx": {"quantize": "int8-dynamic"}}),
    "lstm_lm_step_int8dyn": (lstm_lm, "step", {"onnx": {"quantize": "int8-dynamic"}}),
}


def _converter(fmt: str) -> Callable[..., Any] | None:
    """dkp_deploy.converters.to_<fmt>, or None (with a note) while that converter is not importable."""
    try:
        module = importlib.import_module(f"dkp_deploy.converters.{fmt}")
        return getattr(module, f"to_{fmt}")
    except (ImportError, AttributeError) as e:
        print(f"dkp_deploy.converters.{fmt} not usable yet ({e}): no converted .{fmt} to check")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the models, feeds and manifest")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    converters = {fmt: _converter(fmt) for fmt in ("onnx", "tflite")}
    manifest: dict = {"atol": ATOL, "rtol": RTOL, "models": []}
    for k, (name, (build, mode, formats)) in enumerate(MODELS.items()):
        spec = build(np.random.default_rng(k))
        spec.check()
        feeds = signature.random_feeds(spec, mode, batch=2, seed=100 + k)
        quantized = next((o["quantize"] for o in formats.values() if o.get("quantize")), None)
        ref = reference.run(dequantized_spec(spec) if quantized else spec, feeds, mode,
                            matrix_input=matrix_input(quantized))
        np.savez(
            args.out / f"{name}.npz",
            **{f"in/{n}": v for n, v in feeds.items()},
            **{f"ref/{n}": v for n, v in ref.items()},
        )
        files = {}
        for fmt, options in formats.items():
            if converters[fmt] is not None:
                converters[fmt](spec, args.out / f"{name}.{fmt}", mode=mode, **options)
                files[fmt] = f"{name}.{fmt}"
        label = " ".join([spec.arch, mode, *(f"{k}={v}" for o in formats.values() for k, v in o.items())])
        manifest["models"].append({"name": name, "label": label, "data": f"{name}.npz", **files})
        shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in feeds.items())
        print(f"{name}: {label}, inputs {shapes}, files {sorted(files.values()) or 'none'}")
    for entry in general_models(args.out):
        manifest["models"].append(entry)
        print(f"{entry['name']}: {entry['label']}")
    for entry in op_graphs(args.out):  # last: a crash in the error case must not hide the other results
        manifest["models"].append(entry)
        print(f"{entry['name']}: one ai.dkp::SparseMatVec node, {entry['label'][8:]}, built with onnx.helper")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


def general_models(out: Path) -> list[dict]:
    """User-style torch models through `dkp_deploy.export` (none without torch): a word LM with a tied GRU and a
    bidirectional LSTM tagger, compressed, exported at one shape and checked at another."""
    try:
        import torch
        from torch import nn

        import dkp_deploy
        from dkp_deploy.export import export
    except ImportError as e:
        print(f"no torch / onnxscript ({e}): no general-path models to check")
        return []
    import copy
    import warnings

    class WordLM(nn.Module):  # pytorch/examples' word_language_model, GRU with tied weights
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.rnn, self.decoder = nn.Embedding(60, 32), nn.GRU(32, 32, 2), nn.Linear(32, 60)
            self.decoder.weight = self.encoder.weight

        def forward(self, tokens, hidden):
            out, hidden = self.rnn(self.encoder(tokens), hidden)
            return self.decoder(out), hidden

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.out = nn.LSTM(16, 24, 2, batch_first=True, bidirectional=True), nn.Linear(48, 7)

        def forward(self, x):
            return self.out(self.lstm(x)[0])

    torch.manual_seed(0)
    rng = np.random.default_rng(11)
    T, B = torch.export.Dim("time"), torch.export.Dim("batch")
    cases = [
        ("general_gru_lm", WordLM(), (torch.randint(0, 60, (5, 2)), torch.zeros(2, 2, 32)),
         ({0: T, 1: B}, {1: B}), [rng.integers(0, 60, (9, 3)), rng.standard_normal((2, 3, 32)).astype(np.float32)],
         "custom"),
        ("general_tagger", Tagger(), (torch.randn(2, 6, 16),), ({0: B, 1: T},),
         [rng.standard_normal((3, 11, 16)).astype(np.float32)], "portable"),
    ]
    lm_step = WordLM()
    cases.append(("general_gru_lm_step", lm_step, (torch.randint(0, 60, (1, 2)), torch.zeros(2, 2, 32)),
                  ({1: B}, {1: B}), [rng.integers(0, 60, (1, 3)), rng.standard_normal((2, 3, 32)).astype(np.float32)],
                  "custom"))
    entries = []
    for name, model, args, dims, feeds, impl in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compress names the tied decoder it leaves dense
            model = dkp_deploy.compress(model, cf=2).eval()
        n_out = 2 if name.startswith("general_gru_lm") else 1
        outputs = [f"out{i}" for i in range(n_out)]
        inputs = [f"in{i}" for i in range(len(feeds))]
        mode = "step" if name.endswith("_step") else "sequence"
        export(model, args, out / f"{name}.onnx", dynamic_shapes=dims, sparse_impl=impl, input_names=inputs,
               output_names=outputs, mode=mode)
        files = {"onnx": f"{name}.onnx"}
        if mode == "step":  # the same hub translated to TFLite builtin ops
            export(model, args, out / f"{name}.tflite", dynamic_shapes=dims, input_names=inputs,
                   output_names=outputs, mode=mode)
            files["tflite"] = f"{name}.tflite"
        with torch.no_grad():
            ref = copy.deepcopy(model).double()(*(torch.from_numpy(f) if f.dtype.kind == "i"
                                                  else torch.from_numpy(f).double() for f in feeds))
        refs = ref if isinstance(ref, tuple) else (ref,)
        np.savez(out / f"{name}.npz", **{f"in/{i}": f for i, f in zip(inputs, feeds)},
                 **{f"ref/{o}": r.numpy() for o, r in zip(outputs, refs)})
        label = f"dkp_deploy.export of a torch {type(model).__name__}, sparse_impl={impl}, other T and batch"
        entries.append({"name": name, "label": label + (", step" if mode == "step" else ""), "data": f"{name}.npz",
                        **files})
    return entries


def op_graphs(out: Path) -> list[dict]:
    """The op alone, built with onnx.helper, as its contract states it: Y = X @ W_s^T + Y0, X of rank 3.

    Three entries: the CSR arrays as constant initializers (checked once, when the kernel is created); as graph
    inputs (checked on every call); and those inputs fed a column index out of range, which must come back as
    an onnxruntime error that names `col_idx`, not as a crash.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    m, n = 40, 24
    ws = np.where(rng.random((m, n)) < 0.1, rng.standard_normal((m, n)), 0.0).astype(np.float32)
    ws[3] = 0.0  # an empty row
    csr = CSR.from_dense(ws)
    arrays = {"row_ptr": csr.row_ptr, "col_idx": csr.col_idx, "values": csr.values}
    x = rng.standard_normal((2, 3, n)).astype(np.float32)
    y0 = rng.standard_normal((2, 3, m)).astype(np.float32)
    ref = x.astype(np.float64) @ csr.to_dense().T + y0
    bad_col_idx = csr.col_idx.copy()
    bad_col_idx[-1] = n

    def graph(name: str, csr_as_inputs: bool) -> str:
        node = helper.make_node("SparseMatVec", ["x", *arrays, "y0"], ["y"], domain="ai.dkp")
        inputs = [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, n]),
            helper.make_tensor_value_info("y0", TensorProto.FLOAT, [None, None, m]),
        ]
        if csr_as_inputs:
            inputs += [
                helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), [None])
                for k, v in arrays.items()
            ]
            inits = []
        else:
            inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
        out_info = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.dkp", 1)]
        model = helper.make_model(helper.make_graph([node], name, inputs, out_info, inits), opset_imports=opsets)
        model.ir_version = 8  # loads in every onnxruntime since 1.10
        onnx.save(model, out / f"{name}.onnx")
        return f"{name}.onnx"

    feeds = {"in/x": x, "in/y0": y0}
    csr_feeds = {**feeds, **{f"in/{k}": v for k, v in arrays.items()}}
    np.savez(out / "sparse_matvec.npz", **feeds, **{"ref/y": ref})
    np.savez(out / "sparse_matvec_inputs.npz", **csr_feeds, **{"ref/y": ref})
    np.savez(out / "malformed_csr.npz", **{**csr_feeds, "in/col_idx": bad_col_idx})
    csr_inputs_file = graph("sparse_matvec_inputs", csr_as_inputs=True)
    return [
        {
            "name": "sparse_matvec",
            "label": "the op, constant CSR",
            "data": "sparse_matvec.npz",
            "onnx": graph("sparse_matvec", csr_as_inputs=False),
        },
        {
            "name": "sparse_matvec_inputs",
            "label": "the op, CSR as inputs",
            "data": "sparse_matvec_inputs.npz",
            "onnx": csr_inputs_file,
        },
        {
            "name": "malformed_csr",
            "label": "the op, col_idx out of range",
            "data": "malformed_csr.npz",
            "onnx": csr_inputs_file,
            "expect_error": "col_idx",
        },
    ]


if __name__ == "__main__":
    sys.exit(main())
