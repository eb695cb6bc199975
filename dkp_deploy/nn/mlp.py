"""`DopedMLP` and the named activations a doped MLP (and its spec) may hold."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from .linear import DopedLinear

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def activation_module(kind: str) -> nn.Module:
    """A fresh torch module for one of the spec's activation names."""
    try:
        return ACTIVATION_MODULES[kind]()
    except KeyError:
        raise ValueError(f"unknown activation {kind!r} (known: {', '.join(ACTIVATION_MODULES)})") from None


def activation_kind(module: nn.Module) -> str | None:
    """The spec name of an activation module, or None if it is not one (GELU only in its exact, erf form)."""
    for kind, cls in ACTIVATION_MODULES.items():
        if type(module) is cls:
            if kind == "gelu" and getattr(module, "approximate", "none") != "none":
                return None
            return kind
    return None


class DopedMLP(nn.Sequential):
    """nn.Sequential of DopedLinear layers with a named activation between them.

    ``DopedMLP([784, 256, 10], activation="relu", structure="kron", density=0.1)`` is
    DopedLinear(784, 256) -> ReLU -> DopedLinear(256, 10). ``final_activation`` (a name) follows the last layer.
    ``**doping`` goes to every DopedLinear.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        *,
        final_activation: str | None = None,
        bias: bool = True,
        **doping: Any,
    ) -> None:
        if len(sizes) < 2:
            raise ValueError(f"DopedMLP needs at least an input and an output size, got {list(sizes)}")
        layers: list[nn.Module] = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(DopedLinear(n_in, n_out, bias, **doping))
            if k < len(sizes) - 2:
                layers.append(activation_module(activation))
        if final_activation is not None:
            layers.append(activation_module(final_activation))
        super().__init__(*layers)

    @classmethod
    def from_modules(cls, modules: OrderedDict[str, nn.Module]) -> DopedMLP:
        """A DopedMLP holding exactly these named modules (what `from_spec` rebuilds)."""
        mlp = cls.__new__(cls)
        nn.Sequential.__init__(mlp, modules)
        return mlp


__all__ = ["DopedMLP", "ACTIVATION_MODULES", "activation_module", "activation_kind"]
