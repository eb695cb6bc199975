"""The general export path's LM step against the native converter's, same weights, same run (issue 11).

Medium 2x650 LSTM LM at 25x (dense 10k decoder), batch 1, 1 thread: `dkp-convert --mode step` of the spec vs
`dkp_deploy.export(..., mode="step")` of the same model as a torch module. Prints medians and their ratio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from dkp_deploy import runtime
from dkp_deploy.bench.timing import median_seconds
from dkp_deploy.bench.workloads import MEDIUM, lm_specs
from dkp_deploy.converters import to_onnx
from dkp_deploy.export import export
from dkp_deploy.nn import from_spec


def main() -> None:
    torch.set_num_threads(1)
    spec = lm_specs(MEDIUM[25])[1]
    with tempfile.TemporaryDirectory() as d:
        native = to_onnx(spec, Path(d) / "native.onnx", mode="step", quiet=True)
        model = from_spec(spec).eval()
        state = (torch.zeros(2, 1, 650), torch.zeros(2, 1, 650))
        general = export(model, (torch.zeros(1, 1, dtype=torch.int64), state), Path(d) / "general.onnx",
                         mode="step")
        rng = np.random.default_rng(0)
        h, c = (rng.standard_normal((2, 1, 650)).astype(np.float32) for _ in range(2))
        tok = np.array([7], np.int64)
        s_native, s_general = runtime.session(native), runtime.session(general)
        f_native = {"x_t": tok, "h": h, "c": c}
        names = [i.name for i in s_general.get_inputs()]
        f_general = dict(zip(names, [tok[None, :], h, c]))
        a = s_native.run(None, f_native)
        b = s_general.run(None, f_general)
        assert np.abs(a[0] - b[0][0]).max() <= 1e-4 * np.abs(a[0]).max()
        times = {"native": [], "general": []}
        for _ in range(5):  # interleaved rounds
            times["native"].append(median_seconds(lambda: s_native.run(None, f_native), repeats=200))
            times["general"].append(median_seconds(lambda: s_general.run(None, f_general), repeats=200))
    med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    print(f"native step {med['native']:.0f} us, general step {med['general']:.0f} us, "
          f"general / native = {med['general'] / med['native']:.3f}")


if __name__ == "__main__":
    main()
