"""Turn what a user hands a converter (spec, checkpoint path, torch module) into a checked `ModelSpec`."""

from __future__ import annotations

import os
from typing import Any

from . import __version__
from .fileio import existing_file, sha256_file
from .spec import ModelSpec


def as_spec(obj: Any) -> tuple[ModelSpec, dict[str, Any]]:
    """Return (spec, provenance). Provenance records the source file and its sha256 where there is one.

    Accepts a `ModelSpec`, a path to a checkpoint written by `dkp_deploy.save`, or a torch module that
    `dkp_deploy.nn.to_spec` understands (DopedLinear stacks, DopedLSTM, DopedLSTMLM).
    """
    provenance: dict[str, Any] = {"tool": "dkp-deploy", "tool_version": __version__}
    if isinstance(obj, ModelSpec):
        spec = obj
    elif isinstance(obj, (str, os.PathLike)):
        from .checkpoint import load_spec

        path = existing_file(obj)
        spec = load_spec(path)
        provenance.update(source=os.path.basename(path), source_sha256=sha256_file(path))
    else:
        from .nn import to_spec

        spec = to_spec(obj)
    spec.check()
    return spec, provenance
