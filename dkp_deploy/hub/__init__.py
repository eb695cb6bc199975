"""The hub: an ONNX model holding standard ops plus one high-level `ai.dkp::DopedMatMul` node per doped matrix.

Every front end (`dkp_deploy.export` for torch modules) writes a hub; every target is a lowering of it
(`dkp_deploy.lower`). The hub needs no torch: `schema` registers its node kinds with onnx, `matrix` writes and
reads `DopedMatMul` nodes, `reference` evaluates a hub in float64 with `onnx.reference`.
"""

from .matrix import DOPED_MATMUL, doped_matmul_node, read_doped_matmul
from .schema import DOMAIN, register_schemas

__all__ = ["DOMAIN", "DOPED_MATMUL", "doped_matmul_node", "read_doped_matmul", "register_schemas"]
