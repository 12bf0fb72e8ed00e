"""Recipe: everything that determines a child's bytes, in one readable dataclass with a YAML form.

A recipe names the parents (Hub id + revision, optionally a local folder), the merge method, the base of
delta methods ("father" or a common ancestor), the per-tensor ratios ("share of the mother": 0 = father,
1 = mother) and DARE/TIES densities as compact tables, the transplant thresholds, frozen layers, the child's
dtype and a seed; for some methods their options (breadcrumbs' gamma, DELLA's epsilon, SCE's select_topk) and
`negate` (a parent's task vector entering with a negative weight, mergekit's negative `weight`), each refused
by methods that do not take it, and hashed only when set. `recipe_hash` is sha256 of a canonical serialisation of the fields that change bytes (not of
cosmetic ones: local paths, the genome it came from, notes), and it seeds the DARE masks: the same recipe on
the same parents gives bit-identical tensors on every run. Parents enter it by what they are (`ParentRef.identity`:
a Hub commit, or the sha256 of a local folder's weights), never by a folder's name or place. `layer_map`
({father_layer: mother_layer}) overrides the relative-depth layer map of a cross-architecture FFN pair
(`darwin_core.merge.pairing`); hashed only when set. `tokenizer_source` (father, mother or union: mergekit's
``tokenizer_source``) says whose vocabulary a child of parents with different vocabularies speaks
(`darwin_core.merge.vocabulary`); hashed only when it is not the default father, so older recipes keep their hash.

Lookup of a tensor's parameters (`ratio_for`, `densities_for`, `plan_for`) goes through
`darwin_core.parents.anatomy.classify(name) -> TensorRole(layer, role, tower)`, so tables speak in layers and roles:

    1. frozen layer                         → ratio 0, the father's tensor as is
    2. `tensors[name]`                      (per-tensor override, e.g. from an MRI prescription)
    3. `layers[layer][role]`, then `layers[layer]["*"]`
    4. `roles[role]`
    5. `default`

Then the transplant thresholds (if any): ratio < low → the father's tensor as is, ratio > high → the mother's.
Tensors of non-language towers (vision/audio encoders) are always the father's, untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from darwin_core.errors import DarwinError
from darwin_core.merge.methods.registry import DEFAULT_METHOD, TensorParams, get_method
from darwin_core.io.dtypes import CHILD_DTYPES as DTYPES
from darwin_core.parents.anatomy import classify
from darwin_core.parents.tokenizers import TokenizerSource
from darwin_core.recipe.columns import seed_message, seed_of
from darwin_core.recipe.refs import ParentRef
from darwin_core.recipe.tables import ParamTable, _unit, density_table, ratio_table

FORMAT = "darwin-recipe/1"
RECIPE_FILE = "darwin-recipe.yaml"
DEFAULT_TRANSPLANT = (0.15, 0.85)
METHOD_OPTIONS = ("gamma", "epsilon", "select_topk")  # numeric method options, TensorParams fields of the same names


@dataclass(frozen=True)
class GenomeRecord:
    """Where the ratios came from (cosmetic: not hashed): the genome space and the vector, by dimension name."""

    space: str
    names: tuple[str, ...]
    vector: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "vector", tuple(float(v) for v in self.vector))
        if len(self.names) != len(self.vector):
            raise DarwinError(f"The genome has {len(self.vector)} values for {len(self.names)} dimensions.")

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.vector))


@dataclass(frozen=True)
class TensorPlan:
    """What happens to one tensor: `source` "father"/"mother" = that parent's tensor as is; None = merge."""

    source: str | None
    params: TensorParams
    keep_dtype: bool = False  # non-language towers keep the father's dtype, untouched


@dataclass(frozen=True)
class Recipe:
    """A child, fully determined. Build with keyword arguments; load/save with `from_yaml` / `to_yaml`."""

    father: ParentRef
    mother: ParentRef
    method: str = DEFAULT_METHOD
    base: Any = "father"  # "father" or a ParentRef of the common ancestor (delta methods)
    ratios: ParamTable = field(default_factory=lambda: ratio_table(0.5))
    densities: ParamTable = field(default_factory=density_table)
    transplant: tuple[float, float] | None = None
    frozen_layers: tuple[int, ...] = ()
    dtype: str | None = None  # child dtype: float32 / bfloat16 / float16; None = each tensor keeps the father's
    seed: int = 0
    normalize: bool | None = None  # mergekit's `normalize`; None = the method's default
    rescale: bool | None = None  # mergekit's `rescale` (DARE L1 rescaling); None = the method's default
    scale: float = 1.0  # mergekit's `lambda`: multiplies the merged task vector
    method_weight: float = 1.0  # 1 = the method's result; w < 1 blends (1 − w)·linear + w·method
    gamma: float | None = None  # breadcrumbs: share of largest task-vector entries dropped; None = mergekit's 0.01
    epsilon: float | None = None  # DELLA: spread of the keep probabilities; None = mergekit's 0.15
    select_topk: float | None = None  # SCE: share of entries kept by variance; None = mergekit's 1
    negate: str | None = None  # "mother" / "father": that parent's task vector enters with weight −w
    layer_map: Mapping[int, int] | None = None  # FFN-only pairs: father layer → mother layer, over the depth map
    tokenizer_source: TokenizerSource = TokenizerSource.FATHER  # whose vocabulary the child speaks
    genome: GenomeRecord | None = None  # cosmetic
    notes: str | None = None  # cosmetic

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass normalisation)
        set_("father", ParentRef.of(self.father))
        set_("mother", ParentRef.of(self.mother))
        method = get_method(self.method)
        set_("method", method.name)  # the registered plain name (a `Method` member becomes its string)
        if self.base in (None, "father"):
            set_("base", "father")
        else:
            if not method.delta:
                raise DarwinError(f"The method {self.method} does not use a base model; remove base from the recipe.")
            set_("base", ParentRef.of(self.base))
        if not isinstance(self.ratios, ParamTable):
            set_("ratios", ParamTable.from_dict("ratio", self.ratios))
        if not isinstance(self.densities, ParamTable):
            set_("densities", ParamTable.from_dict("density", self.densities))
        if self.ratios.kind != "ratio" or self.densities.kind != "density":
            raise DarwinError("The recipe's ratios and densities tables are swapped.")
        if self.transplant is not None:
            low, high = (_unit(x, "A transplant threshold") for x in self.transplant)
            if low > high:
                raise DarwinError(f"The transplant thresholds must be (low, high) with low ≤ high, got {self.transplant}.")
            set_("transplant", (low, high))
        try:
            frozen = tuple(sorted({int(x) for x in self.frozen_layers}))
        except (TypeError, ValueError):
            raise DarwinError(f"Frozen layers must be layer numbers, got {self.frozen_layers!r}.") from None
        if any(x < 0 for x in frozen):
            raise DarwinError("Frozen layer numbers cannot be negative.")
        set_("frozen_layers", frozen)
        if self.dtype is not None and self.dtype not in DTYPES:
            raise DarwinError(f"The recipe dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise DarwinError(f"The recipe seed must be an integer, got {self.seed!r}.")
        for name in ("normalize", "rescale"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise DarwinError(f"The recipe option {name} must be true, false or null, got {value!r}.")
        try:
            scale = float(self.scale) + 0.0
        except (TypeError, ValueError):
            scale = math.nan
        if not math.isfinite(scale):
            raise DarwinError(f"The recipe scale must be a finite number, got {self.scale!r}.")
        set_("scale", scale)
        set_("method_weight", _unit(self.method_weight, "The method weight"))
        self._check_method_options(method)
        set_("layer_map", _layer_map(self.layer_map))
        set_("tokenizer_source", _tokenizer_source(self.tokenizer_source))
        if self.genome is not None and not isinstance(self.genome, GenomeRecord):
            g = self.genome
            if not isinstance(g, Mapping) or "space" not in g:
                raise DarwinError("The recipe's genome must name its space.")
            values = g.get("values") or {}
            set_("genome", GenomeRecord(str(g["space"]), tuple(values), tuple(values.values())))

    def _check_method_options(self, method: Any) -> None:
        """The method options (gamma, epsilon, select_topk, negate) are valid and taken by this method."""
        if method.needs_ancestor and self.base == "father":
            raise DarwinError(f"The method {self.method} needs a common ancestor as base; name one with base:.")
        for name in METHOD_OPTIONS:
            value = getattr(self, name)
            if value is None:
                continue
            if name not in method.parameters:
                raise DarwinError(f"The method {self.method} does not take {name}; remove it from the recipe.")
            value = _unit(value, f"The recipe option {name}")
            if name == "epsilon" and value >= 0.5:
                raise DarwinError(f"The recipe option epsilon must be below 0.5, got {value!r}.")
            object.__setattr__(self, name, value)
        if self.negate is None:
            return
        if self.negate not in ("father", "mother"):
            raise DarwinError(f"The recipe option negate must be father, mother or null, got {self.negate!r}.")
        if not method.negatable:
            raise DarwinError(f"The method {self.method} has no task-vector weights to negate; remove negate.")
        if self.negate == "father" and self.base == "father":
            raise DarwinError("With base = father the father has no task vector to negate; negate the mother.")

    def _method_options(self) -> dict[str, Any]:
        """The method options that are set (hashed and written only then, so older recipes keep their hash),
        the layer map when one is set, and the tokenizer source when it is not the father's."""
        names = (*METHOD_OPTIONS, "negate")
        options = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.layer_map:
            options["layer_map"] = {int(k): int(v) for k, v in sorted(self.layer_map.items())}
        if self.tokenizer_source is not TokenizerSource.FATHER:
            options["tokenizer_source"] = self.tokenizer_source.value
        return options

    # -- identity -------------------------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The fields that determine the child's bytes, in a canonical JSON-able form (hashed)."""
        def parent(ref: ParentRef) -> dict[str, Any]:
            return ref.identity()

        def table(t: ParamTable) -> dict[str, Any]:
            doc = t.to_dict()
            return {"default": doc["default"], "roles": doc.get("roles", {}),
                    "layers": {str(k): v for k, v in doc.get("layers", {}).items()}, "tensors": doc.get("tensors", {})}

        return {
            "format": FORMAT,
            "father": parent(self.father),
            "mother": parent(self.mother),
            "base": "father" if self.base == "father" else parent(self.base),
            "method": self.method,
            "ratios": table(self.ratios),
            "densities": table(self.densities),
            "transplant": list(self.transplant) if self.transplant else None,
            "frozen_layers": list(self.frozen_layers),
            "dtype": self.dtype,
            "seed": self.seed,
            "normalize": self.normalize,
            "rescale": self.rescale,
            "scale": self.scale,
            "method_weight": self.method_weight,
            **{k: ({str(a): b for a, b in v.items()} if k == "layer_map" else v)
               for k, v in self._method_options().items()},
        }

    @cached_property
    def recipe_hash(self) -> str:
        """sha256 (hex) of the canonical serialisation: equal for recipes that give equal bytes."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def public(self) -> Recipe:
        """The recipe as published (the child's darwin-recipe.yaml, the card): no parent carries a server path.

        Paths are not hashed, so the public recipe has the same `recipe_hash` and compares equal; its parents
        are then found by Hub id@revision (`darwin_core.merge.disk.local_folder`).
        """
        base = self.base if self.base == "father" else self.base.public()
        return replace(self, father=self.father.public(), mother=self.mother.public(), base=base)

    # -- YAML -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "father": self.father.to_dict(),
            "mother": self.mother.to_dict(),
            "base": "father" if self.base == "father" else self.base.to_dict(),
            "method": self.method,
            "dtype": self.dtype,
            "seed": self.seed,
            "ratios": self.ratios.to_dict(),
            "densities": self.densities.to_dict(),
            "transplant": list(self.transplant) if self.transplant else None,
            "frozen_layers": list(self.frozen_layers),
            "normalize": self.normalize,
            "rescale": self.rescale,
            "scale": self.scale,
            "method_weight": self.method_weight,
            **self._method_options(),
        }
        if self.genome is not None:
            doc["genome"] = {"space": self.genome.space, "values": self.genome.as_dict()}
        if self.notes:
            doc["notes"] = self.notes
        return doc

    def to_yaml(self) -> str:
        header = (
            f"# Darwin recipe {self.recipe_hash[:16]}: fully determines the child's weights.\n"
            "# Ratios are the share of the mother (0 = father, 1 = mother). Reproduce with:\n"
            "#   python -m darwin_core merge darwin-recipe.yaml --out CHILD_DIR\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Recipe:
        if not isinstance(doc, Mapping):
            raise DarwinError("A recipe must be a YAML mapping.")
        if doc.get("format", FORMAT) != FORMAT:
            raise DarwinError(f"This recipe has format {doc.get('format')!r}; this Darwin reads {FORMAT}.")
        known = {f for f in cls.__dataclass_fields__} | {"format"}
        unknown = set(doc) - known
        if unknown:
            raise DarwinError(f"The recipe has unknown fields: {', '.join(sorted(map(str, unknown)))}.")
        for required in ("father", "mother"):
            if required not in doc:
                raise DarwinError(f"The recipe does not name its {required}.")
        kwargs = {k: v for k, v in doc.items() if k != "format"}
        kwargs["ratios"] = ParamTable.from_dict("ratio", doc.get("ratios"))
        kwargs["densities"] = ParamTable.from_dict("density", doc.get("densities"))
        if kwargs.get("transplant") is not None:
            kwargs["transplant"] = tuple(kwargs["transplant"])
        kwargs["frozen_layers"] = tuple(kwargs.get("frozen_layers") or ())
        for key, default in (("method", DEFAULT_METHOD), ("seed", 0), ("scale", 1.0), ("method_weight", 1.0)):
            if kwargs.get(key) is None:
                kwargs[key] = default
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise DarwinError(f"The recipe is not valid YAML ({error.__class__.__name__}).") from None
        return cls.from_dict(doc)

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        path = Path(path)
        if path.is_dir():
            path = path / RECIPE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DarwinError(f"The recipe file {path} does not exist.") from None
        return cls.from_yaml(text)

    # -- per-tensor resolution ----------------------------------------------------------------------------------
    def ratio_for(self, name: str) -> float:
        """The share of the mother for this tensor, before transplant thresholds (frozen layers give 0)."""
        return self._ratio(name, classify(name))

    def densities_for(self, name: str) -> tuple[float, float]:
        """(density of the father's task vector, density of the mother's) for this tensor."""
        role = classify(name)
        return self.densities.lookup(name, role.layer, role.role)

    def _ratio(self, name: str, role) -> float:
        if role.layer is not None and role.layer in self.frozen_layers:
            return 0.0
        return self.ratios.lookup(name, role.layer, role.role)

    def mask_seed(self, name: str, parent: str) -> int:
        """The DARE mask seed of one parent's task vector of one tensor: stable, order-independent."""
        return seed_of(hashlib.sha256(seed_message(self.recipe_hash, name, parent)).digest())

    def plan_for(self, name: str) -> TensorPlan:
        """Everything `merge_tensors` needs for one tensor: copy a parent, or merge with these parameters.

        Memoised per recipe (plans are immutable and a candidate asks for each tensor's plan twice: the resident
        child's change check, then the merge); `dataclasses.replace` makes a new recipe with an empty memo."""
        plans = self.__dict__.get("_plans")
        if plans is None:
            plans = {}
            object.__setattr__(self, "_plans", plans)
        plan = plans.get(name)
        if plan is None:
            plan = plans[name] = self._plan_for(name)
        return plan

    def _plan_for(self, name: str) -> TensorPlan:
        role = classify(name)
        source, ratio, densities = self.resolve(name, role)
        # the masks' seeds only where a kernel reads them: a copied tensor has none (its bytes are a parent's), and
        # the father's task vector is zero when he is the base (`delta.task_vector_merge` masks only the mother's)
        seeds = {}
        if source is None and self.reads_mask_seeds:
            father_seed = self.mask_seed(name, "father") if self.base != "father" else 0
            seeds = {"mask_seeds": (father_seed, self.mask_seed(name, "mother"))}
        params = TensorParams(ratio=0.0 if role.tower != "language" else ratio, density_father=densities[0],
                              density_mother=densities[1], **seeds, **self._param_constants)
        return TensorPlan(source, params, keep_dtype=role.tower != "language")

    def resolve(self, name: str, role) -> tuple[str | None, float, tuple[float, float]]:
        """(source, ratio, densities) of one tensor of this `role` (`classify(name)`): the fields of its plan that
        differ between tensors besides the seeds, shared by `plan_for` and `recipe.columns.plan_columns`."""
        ratio = self._ratio(name, role)
        return self._source(role, ratio), ratio, self.densities.lookup(name, role.layer, role.role)

    def _source(self, role, ratio: float) -> str | None:
        """Which parent's tensor is taken whole (None: merged): non-language towers and frozen layers the
        father's, ratios outside the transplant thresholds the nearer parent's."""
        if role.tower != "language" or (role.layer is not None and role.layer in self.frozen_layers):
            return "father"
        if self.transplant is not None:
            low, high = self.transplant
            if ratio < low:
                return "father"
            if ratio > high:
                return "mother"
        return None

    @cached_property
    def shared_params(self) -> TensorParams:
        """The TensorParams of a merged tensor with the fields every tensor of this recipe shares (ratio 0,
        densities 1, default seeds): what `recipe.columns.PlanColumns` carries beside its per-tensor columns."""
        return TensorParams(ratio=0.0, **self._param_constants)

    @cached_property
    def _param_constants(self) -> dict[str, Any]:
        """The TensorParams fields every tensor of this recipe shares (made once, not once per tensor)."""
        return {"normalize": self.normalize, "rescale": self.rescale, "scale": self.scale,
                "weight_signs": (-1.0 if self.negate == "father" else 1.0, -1.0 if self.negate == "mother" else 1.0),
                **{option: getattr(self, option) for option in METHOD_OPTIONS if getattr(self, option) is not None}}

    @cached_property
    def reads_mask_seeds(self) -> bool:
        """Whether the method draws random masks (DARE, DELLA): only then are the per-tensor seeds (two sha256s
        per tensor, a third of a plan's cost) worth computing; a method that does not read them keeps the
        default, which never changes its output (`Method.parameters`)."""
        try:
            return "mask_seeds" in get_method(self.method).parameters
        except (KeyError, ValueError, DarwinError):
            return True

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return DTYPES[self.dtype] if self.dtype else None


def _layer_map(value: Any) -> dict[int, int] | None:
    """A recipe's layer_map as {father layer: mother layer} of non-negative integers; None when empty."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise DarwinError("The recipe's layer_map must map father layers to mother layers, like {3: 2}.")
    out: dict[int, int] = {}
    for key, target in value.items():
        try:
            father_layer, mother_layer = int(key), int(target)
        except (TypeError, ValueError):
            raise DarwinError(f"The recipe's layer_map must map layer numbers, got {key!r}: {target!r}.") from None
        if isinstance(target, bool) or father_layer < 0 or mother_layer < 0 or str(father_layer) != str(key).strip():
            raise DarwinError(f"The recipe's layer_map must map layer numbers, got {key!r}: {target!r}.")
        out[father_layer] = mother_layer
    return dict(sorted(out.items())) or None


def _tokenizer_source(value: Any) -> TokenizerSource:
    """A recipe's tokenizer_source as the enum; None means the default (the father's)."""
    if value is None:
        return TokenizerSource.FATHER
    try:
        return TokenizerSource(getattr(value, "value", value))
    except ValueError:
        raise DarwinError(f"The recipe's tokenizer_source must be father, mother or union, not {value!r}.") from None


def recipe_hash(recipe: Recipe) -> str:
    """Module-level spelling of `Recipe.recipe_hash` (what run folders and cards cite)."""
    return recipe.recipe_hash


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read a recipe YAML file (or the darwin-recipe.yaml of a child folder)."""
    return Recipe.load(path)


# What each Recipe field means, as docs/reference.md shows it (scripts/reference.py; tests/test_reference.py
# fails when a field has no entry here). In YAML a recipe also carries `format: darwin-recipe/1`.
RECIPE_FIELD_DOCS: dict[str, str] = {
    "father": "The first parent: `{id: org/name, revision: <commit>}` (a Hub id, `demo:<name>` or `run:<id>`), "
              "optionally with `path:` for a folder on this machine (never hashed, never published); a local "
              "folder carries `sha256:` (of its weight files), which names it in the hash instead of its id.",
    "mother": "The second parent, written like the father.",
    "method": "The merge method (see the methods table in the README); default linear.",
    "base": "`father`, or the common ancestor of task-vector methods written like a parent.",
    "ratios": "The share of the mother per tensor (0 = father, 1 = mother): a number, or a table "
              "`{default, roles: {role: r}, layers: {n: {role or '*': r}}, tensors: {name: r}}` (most specific wins).",
    "densities": "DARE/TIES densities (father's, mother's) as a pair or a table like `ratios`; default [1, 1].",
    "transplant": "`[low, high]`: a tensor whose ratio is below low is the father's as is, above high the "
                  "mother's; null = always merge.",
    "frozen_layers": "Layers copied from the father untouched.",
    "dtype": "The child's dtype (float32, bfloat16, float16); null = each tensor keeps the father's.",
    "seed": "Seeds the DARE masks (with the recipe's hash): equal recipes give equal bytes.",
    "normalize": "mergekit's `normalize`; null = the method's default.",
    "rescale": "mergekit's `rescale` (DARE's L1 rescaling); null = the method's default.",
    "scale": "mergekit's `lambda`: multiplies the merged task vector; default 1.",
    "method_weight": "1 = the method's result; w < 1 blends (1 − w)·linear + w·method.",
    "gamma": "breadcrumbs: the share of the largest task-vector entries dropped; null = mergekit's 0.01.",
    "epsilon": "DELLA: the spread of the keep probabilities (below 0.5); null = mergekit's 0.15.",
    "select_topk": "SCE: the share of entries kept by variance; null = mergekit's 1.",
    "negate": "`mother` or `father`: that parent's task vector enters with weight −w; null = none.",
    "layer_map": "Cross-architecture FFN pairs: `{father_layer: mother_layer}` over the relative-depth map "
                 "⌊i·(M−1)/(F−1) + ½⌋; hashed only when set.",
    "tokenizer_source": "Parents with different vocabularies: whose vocabulary the child speaks — `father` "
                        "(default), `mother` or `union` (mergekit's `tokenizer_source`); embedding and head rows are "
                        "aligned by token; hashed only when not father.",
    "genome": "Cosmetic (not hashed): the genome space and vector the ratios came from, `{space, values}`.",
    "notes": "Cosmetic (not hashed): free text.",
}
