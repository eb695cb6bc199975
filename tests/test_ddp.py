"""examples/train_ddp.py under torchrun (2 ranks, gloo) gives the model one process gives at the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_ddp.py"


def _run(args: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([*args, str(SCRIPT), "--tiny", "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.glob("*.pt")) == ["model.pt"]  # one checkpoint, written by rank 0


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_ddp_two_ranks_match_one_process(tmp_path: Path) -> None:
    import dkp_deploy

    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path / "ddp")
    _run([sys.executable], tmp_path / "single")
    a = dkp_deploy.load(tmp_path / "ddp" / "model.pt").state_dict()
    b = dkp_deploy.load(tmp_path / "single" / "model.pt").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype == torch.bool:
            assert torch.equal(a[k], b[k]), k
            continue
        rel = float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-30))
        assert rel < 1e-4, (k, rel)
