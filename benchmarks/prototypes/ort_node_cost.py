"""What one more small node costs in an onnxruntime step graph: chains of 1, 11 and 41 elementwise nodes on [1, H].

    .venv/bin/python benchmarks/prototypes/ort_node_cost.py [--hidden 650]

The slope is the price of each Split / Squeeze / Sigmoid / Mul the converter emits per LSTM layer and step, i.e.
what removing nodes from the step graph can save at most.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from dkp_deploy.bench import measure


def chain(path: Path, n: int, hidden: int, op: str) -> Path:
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node(op, [prev], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1, hidden]) for k in ("x", "y")]
    onnx.save(helper.make_model(helper.make_graph(nodes, "chain", io[:1], io[1:]),
                                opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=650)
    p.add_argument("--op", default="Sigmoid")
    args = p.parse_args(argv)
    x = np.ones((1, args.hidden), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fns = {n: measure.ort_runner(measure.ort_session(chain(Path(tmp) / f"c{n}.onnx", n, args.hidden, args.op)),
                                     {"x": x}) for n in (1, 11, 41)}
        t = measure.compare(fns, measure.Budget(rounds=7, repeats=200, warmup=20))
    per_node = (t[41].seconds - t[1].seconds) / 40
    print(", ".join(f"{n} x {args.op}: {v.seconds * 1e6:.2f} us" for n, v in t.items()))
    print(f"each extra {args.op} node on [1, {args.hidden}]: {per_node * 1e6:.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
