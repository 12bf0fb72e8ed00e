"""The recipe's compact per-tensor tables (ratios, densities) and their lookup by layer and role.

A `ParamTable` resolves one tensor's value in this order (the recipe applies frozen layers before it):
`tensors[name]`, then `layers[layer][role]`, then `layers[layer]["*"]`, then `roles[role]`, then `default`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from darwin_core.errors import DarwinError

TABLE_ROLES = frozenset(
    {"embed", "lm_head", "final_norm", "attn", "linear_attn", "ffn", "router", "experts", "shared_expert",
     "norm", "other"}
)
ANY_ROLE = "*"


def _unit(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DarwinError(f"{what} must be a number between 0 and 1, got {value!r}.") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise DarwinError(f"{what} must be between 0 and 1, got {value!r}.")
    return number + 0.0  # -0.0 → 0.0, so equal recipes serialise (and hash) equally


def _pair(value: Any, what: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DarwinError(f"{what} must be a pair [father, mother] of densities, got {value!r}.")
    return (_unit(value[0], f"{what} (father)"), _unit(value[1], f"{what} (mother)"))


@dataclass(frozen=True)
class ParamTable:
    """Per-tensor values resolved from a compact table; see the module docstring for the lookup order.

    `kind` is "ratio" (values: floats in [0, 1]) or "density" (values: (father, mother) pairs in [0, 1]).
    """

    kind: str
    default: Any
    roles: Mapping[str, Any] = field(default_factory=dict)
    layers: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    tensors: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        norm = _unit if self.kind == "ratio" else _pair
        object.__setattr__(self, "default", norm(self.default, f"The default {self.kind}"))
        roles = {}
        for role, value in (self.roles or {}).items():
            _check_role(role, allow_any=False)
            roles[str(role)] = norm(value, f"The {self.kind} of role {role}")
        layers: dict[int, dict[str, Any]] = {}
        for layer, row in (self.layers or {}).items():
            try:
                index = int(layer)
            except (TypeError, ValueError):
                raise DarwinError(f"Layer keys of the {self.kind} table must be integers, got {layer!r}.") from None
            if index < 0:
                raise DarwinError(f"Layer {index} in the {self.kind} table is negative.")
            if not isinstance(row, Mapping):
                row = {ANY_ROLE: row}
            layers[index] = {}
            for role, value in row.items():
                _check_role(role, allow_any=True)
                layers[index][str(role)] = norm(value, f"The {self.kind} of layer {index} {role}")
        tensors = {str(name): norm(value, f"The {self.kind} of {name}") for name, value in (self.tensors or {}).items()}
        object.__setattr__(self, "roles", dict(sorted(roles.items())))
        object.__setattr__(self, "layers", {k: dict(sorted(v.items())) for k, v in sorted(layers.items())})
        object.__setattr__(self, "tensors", dict(sorted(tensors.items())))

    def lookup(self, name: str, layer: int | None, role: str) -> Any:
        if name in self.tensors:
            return self.tensors[name]
        if layer is not None and layer in self.layers:
            row = self.layers[layer]
            if role in row:
                return row[role]
            if ANY_ROLE in row:
                return row[ANY_ROLE]
        if role in self.roles:
            return self.roles[role]
        return self.default

    def to_dict(self) -> dict[str, Any]:
        def out(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        doc: dict[str, Any] = {"default": out(self.default)}
        if self.roles:
            doc["roles"] = {k: out(v) for k, v in self.roles.items()}
        if self.layers:
            doc["layers"] = {k: {r: out(v) for r, v in row.items()} for k, row in self.layers.items()}
        if self.tensors:
            doc["tensors"] = {k: out(v) for k, v in self.tensors.items()}
        return doc

    @classmethod
    def from_dict(cls, kind: str, doc: Any) -> ParamTable:
        if doc is None:
            return cls(kind, 0.5 if kind == "ratio" else (1.0, 1.0))
        if not isinstance(doc, Mapping):  # a bare number (or pair) means "this value everywhere"
            return cls(kind, doc)
        unknown = set(doc) - {"default", "roles", "layers", "tensors"}
        if unknown:
            raise DarwinError(f"The {kind} table has unknown keys: {', '.join(sorted(map(str, unknown)))}.")
        if "default" not in doc:
            raise DarwinError(f"The {kind} table needs a default.")
        return cls(kind, doc["default"], doc.get("roles") or {}, doc.get("layers") or {}, doc.get("tensors") or {})


def _check_role(role: Any, *, allow_any: bool) -> None:
    if role in TABLE_ROLES or (allow_any and role == ANY_ROLE):
        return
    known = ", ".join(sorted(TABLE_ROLES)) + (", *" if allow_any else "")
    raise DarwinError(f"Unknown tensor role {role!r} in a recipe table; roles are: {known}.")


def ratio_table(default: float = 0.5, **kw: Any) -> ParamTable:
    return ParamTable("ratio", default, **kw)


def density_table(default: Any = (1.0, 1.0), **kw: Any) -> ParamTable:
    return ParamTable("density", default, **kw)
