"""What both converters record in the file they write (the dkp.* metadata) and show while writing it (progress)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm

from .. import __version__
from ..spec import ModelSpec

FORMAT_VERSION = 1  # of the dkp.* metadata
_LAYER_FIELDS = ("shape", "structure", "factor_shapes", "nnz", "compression_factor")


def metadata(spec: ModelSpec, provenance: dict[str, Any], tensors: dict[str, dict], **entries: str) -> dict[str, str]:
    """The dkp.* key/value entries: what the validator and people need to know about the file.

    `tensors` maps each matrix name to the names of the file's tensors holding its parts (by role: "B", "C",
    "W_s", ...); `entries` are format-specific extras (e.g. mode="step" becomes "dkp.mode").
    """
    summary = spec.summary()
    layers = {name: {**{k: info[k] for k in _LAYER_FIELDS}, "tensors": tensors.get(name, {})}
              for name, info in summary["layers"].items()}
    meta = {
        "dkp.format_version": str(FORMAT_VERSION),
        "dkp.arch": spec.arch,
        **{f"dkp.{key}": str(value) for key, value in entries.items()},
        "dkp.compression_factor": f"{summary['compression_factor']:.6g}",
        "dkp.layers": json.dumps(layers, sort_keys=True),
        "dkp.tool_version": provenance.get("tool_version", __version__),
    }
    for key in ("source", "source_sha256"):
        if key in provenance:
            meta[f"dkp.{key}"] = str(provenance[key])
    return meta


@contextlib.contextmanager
def progress(spec: ModelSpec, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A per-layer progress bar on stderr (only on a terminal, never when `quiet`); yields `tick(layer_name)`."""
    bar = tqdm(total=len(spec.matrices()), desc="dkp-convert", unit="layer", disable=True if quiet else None,
               leave=False)

    def tick(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        yield tick
    finally:
        bar.close()
