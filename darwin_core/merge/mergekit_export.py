"""Export a Recipe as a mergekit 0.1.5 YAML config (`mergekit_yaml`), where mergekit can express it.

Parameter mapping, per tensor with ratio r (share of the mother) and densities (d_f, d_m):

| Darwin method    | mergekit merge_method | base_model       | father params            | mother params      | shared params                    |
|------------------|-----------------------|------------------|--------------------------|--------------------|----------------------------------|
| linear           | linear                | —                | weight 1 − r             | weight r           | (normalize: default true)        |
| slerp            | slerp                 | father           | —                        | —                  | t = r                            |
| task_arithmetic  | task_arithmetic       | father/ancestor  | weight 1 − r             | weight r           | normalize, lambda = scale        |
| ties             | ties                  | father/ancestor  | weight 1 − r, density d_f| weight r, density d_m | normalize, rescale, lambda    |
| dare_ties        | dare_ties             | father/ancestor  | weight 1 − r, density d_f| weight r, density d_m | normalize, rescale, lambda    |
| dare_linear      | dare_linear           | father/ancestor  | weight 1 − r, density d_f| weight r, density d_m | normalize, rescale, lambda    |
| transplant       | linear                | —                | weight 1 or 0            | weight 0 or 1      |                                  |
| breadcrumbs(_ties)| breadcrumbs(_ties)   | father/ancestor  | weight, density, gamma   | weight, density, gamma | normalize, rescale, lambda   |
| della(_linear)   | della(_linear)        | father/ancestor  | weight, density, epsilon*| weight, density, epsilon* | normalize, rescale, lambda|
| nuslerp          | nuslerp               | ancestor or —    | weight 1 − r             | weight r           |                                  |
| model_stock      | model_stock           | ancestor         | —                        | —                  |                                  |
| sce              | sce                   | ancestor         | —                        | —                  | select_topk                      |

A recipe's `negate` writes that parent's weight negative (mergekit's negative task-vector weights). (*) DELLA's
epsilon is written per tensor as Darwin caps it (`della.effective_epsilon`), so mergekit accepts every density.

With base = father, mergekit ignores the father's own weight/density (his task vector is zero), so only the
mother's are written. The export always sets `dtype: float32` (mergekit then computes in float32, as Darwin)
and `out_dtype` to the child's dtype.

Parents whose vocabularies differ: the recipe's `tokenizer_source` is written in mergekit's spelling (father →
``base``, ``union``, mother → her path), and whenever one is written `base_model` names the father (linear
ignores it for the math, but mergekit's ``base`` tokenizer and the union's order are the base model's; without
one mergekit takes the first of a set of models). A father source is written only when it matters: when both
parents are local folders whose vocabularies differ (`darwin_core.merge.vocabulary.plan_vocabulary`).

Not expressible, with the sentence the DarwinError gives: `method_weight` < 1 (a blend of the method's result
with linear interpolation: mergekit has no such blend); a copied tensor (frozen layer, transplant, tower) for
methods without weights (model_stock, sce). DARE and DELLA with densities < 1 are exported, but mergekit draws
its masks from torch's global RNG (`--random-seed`), so the two children differ where masks differ: the YAML
says so in a comment.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import yaml

from darwin_core.io.dtypes import dtype_name
from darwin_core.errors import DarwinError
from darwin_core.merge.methods.registry import TensorParams, get_method
from darwin_core.parents.compatibility import PairingMode

if TYPE_CHECKING:
    from darwin_core.recipe import ParentRef, Recipe

# mergekit 0.1.5 reads MoE checkpoints in transformers 5's in-memory layout: experts fused per layer
# (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`) and Mixtral's `block_sparse_moe.` renamed `mlp.`.
# Filters built from on-disk names get these aliases so they also catch mergekit's names.
MERGEKIT_NAME_ALIASES = (("block_sparse_moe.", "mlp."),)
_EXPERT = re.compile(r"^(?P<head>.*\.experts\.)\d+\.")



def _model_ref(ref: ParentRef) -> str:
    if ref.path:
        return ref.path
    return ref.label()


def _tensor_values(recipe: Recipe, name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """mergekit parameters of one tensor, with copies (frozen/transplant/towers) as weight 0/1, density 1.

    Every method's own mapping expresses a copy (ratio 0 or 1, densities 1) as that parent's values: linear and
    transplant as weights 0/1, SLERP as t = 0/1, the task-vector methods as weight 0/1 on a full task vector."""
    method = get_method(recipe.method)
    plan = recipe.plan_for(name)
    params = plan.params
    if plan.source is not None:
        share = 1.0 if plan.source == "mother" else 0.0
        params = TensorParams(ratio=share, density_father=1.0, density_mother=1.0,
                              normalize=params.normalize, rescale=params.rescale, scale=1.0)
    return method.mergekit_params(params)


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    prefix = first[:i]
    if len(names) == 1:
        return prefix
    cut = prefix.rfind(".")
    return prefix[: cut + 1] if cut >= 0 else ""


def _first_match(name: str, filters: list[tuple[str, Any]], default: Any) -> Any:
    """mergekit's rule (`config.evaluate_setting`): the first filter that is a substring of the name wins."""
    for flt, value in filters:
        if flt in name:
            return value
    return default


def _conditional(values: dict[str, Any]) -> Any:
    """Filters reproducing `values` (tensor name → value) under mergekit's substring/first-match rule."""
    from darwin_core.parents.anatomy import classify

    default = Counter(values.values()).most_common(1)[0][0]
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name in values:
        role = classify(name)
        groups[(role.tower, role.layer, role.role)].append(name)
    filters: dict[str, Any] = {}
    exact: set[str] = set()
    for names in groups.values():
        group_values = {values[n] for n in names}
        if group_values == {default}:
            continue
        prefix = _common_prefix(names) if len(group_values) == 1 and len(names) > 1 else ""
        if prefix and not prefix.endswith("."):
            prefix = ""
        if prefix:
            filters[prefix] = values[names[0]]
        else:
            for n in names:
                if values[n] != default:
                    filters[n] = values[n]
                    exact.add(n)
    for _ in range(len(values) + 1):
        ordered = sorted(filters.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        wrong = [n for n in values if _first_match(n, ordered, default) != values[n]]
        if not wrong:
            break
        for n in wrong:
            if n in exact:
                raise DarwinError(
                    f"mergekit's substring filters cannot single out tensor {n} (another tensor name contains it)."
                )
            filters[n] = values[n]
            exact.add(n)
    else:  # pragma: no cover - each round adds at least one exact filter
        raise DarwinError("mergekit's filters cannot express this recipe's per-tensor parameters.")
    if not ordered:
        return default
    _check_experts(values)
    out, seen = [], set()
    for flt, value in ordered:
        head = _expert_head(flt)
        aliases = [flt, head] + [head.replace(disk, mk) for disk, mk in MERGEKIT_NAME_ALIASES if disk in head]
        for alias in aliases:
            if alias not in seen:
                seen.add(alias)
                out.append({"filter": alias, "value": value})
    return out + [{"value": default}]


def _expert_head(flt: str) -> str:
    """`...experts.3.w1.weight` → `...experts.` (the prefix of mergekit's fused expert tensors)."""
    match = _EXPERT.match(flt)
    return match["head"] if match else flt


def _check_experts(values: dict[str, Any]) -> None:
    """mergekit merges a layer's experts as fused tensors: they must share one value per layer."""
    per_layer: dict[str, set] = defaultdict(set)
    for name, value in values.items():
        match = _EXPERT.match(name)
        if match:
            per_layer[match["head"]].add(value)
    for head, seen in per_layer.items():
        if len(seen) > 1:
            raise DarwinError(
                f"mergekit cannot express this recipe: mergekit 0.1.5 merges the experts of {head[:-1]} as one "
                "fused tensor, and this recipe gives them different parameters."
            )


def _check_paired_by_name(recipe: Recipe) -> None:
    """mergekit merges only tensors of one name in both parents: a layer map or a wrapper pairing it cannot say."""
    from pathlib import Path

    if not all(ref.path and Path(ref.path).is_dir() for ref in (recipe.father, recipe.mother)):
        return  # names given without the parents' folders: nothing to pair here
    from darwin_core.merge.pairing import pairing_for_folders

    mode = pairing_for_folders(recipe.father.path, recipe.mother.path, recipe.layer_map).mode
    if mode != PairingMode.NAMES:
        raise DarwinError(
            "mergekit cannot express this recipe: its parents are paired by a layer map (feed-forward only) or by "
            "canonical name, and mergekit merges only tensors of the same name in both parents."
        )


def mergekit_yaml(recipe: Recipe, names: Iterable[str] | None = None, *, father_dtype: str | None = None) -> str:
    """A mergekit 0.1.5 config that computes the same child, or a DarwinError saying why none can.

        Every tensor's parameters go through mergekit's filters (substring match, first match wins): one filter
        per (layer, role) group whose values differ from the most common value, by the group's common name
        prefix, or per tensor name where a prefix would catch other tensors; the result is checked by
        replaying mergekit's filter rule on every tensor name. Tensors that Darwin copies from one parent
        (frozen layers, transplant thresholds, vision/audio towers) get weight 0/1 and density 1, which gives
        the same values up to float rounding. `names` defaults to the father's tensors (`recipe.father.path`).
        """
    _check_paired_by_name(recipe)
    method = get_method(recipe.method)
    if method.mergekit_name is None or method.mergekit_params is None:
        raise DarwinError(f"mergekit cannot express this recipe: mergekit has no equivalent of the method {method.name}.")
    if recipe.method_weight < 1.0 and method.blends_with_linear:
        raise DarwinError(
            f"mergekit cannot express this recipe: method_weight {recipe.method_weight:g} blends {recipe.method} "
            "with linear interpolation, and mergekit has no such blend."
        )
    out_dtype = recipe.dtype or father_dtype
    if names is None or out_dtype is None:
        if not recipe.father.path:
            raise DarwinError(
                "Exporting to mergekit needs the father's tensor names: give names= or a recipe with the father's local path."
            )
        from darwin_core.io.tensors import TensorReader

        reader = TensorReader(recipe.father.path)
        if names is None:
            names = reader.names
        if out_dtype is None:
            dtypes = Counter(dtype_name(reader.dtype(n)) for n in reader.names)
            out_dtype = dtypes.most_common(1)[0][0]
    names = list(names)
    if not names:
        raise DarwinError("Exporting to mergekit needs at least one tensor name.")

    _check_fused_experts(recipe, names)
    _check_copies(recipe, names)
    shared_values: dict[str, dict[str, Any]] = defaultdict(dict)
    model_values: dict[str, dict[str, dict[str, Any]]] = {"father": defaultdict(dict), "mother": defaultdict(dict)}
    for name in names:
        shared, per_model = _tensor_values(recipe, name)
        for key, value in shared.items():
            shared_values[key][name] = value
        for who in ("father", "mother"):
            for key, value in per_model.get(who, {}).items():
                model_values[who][key][name] = value

    father_is_base = method.mergekit_base and recipe.base == "father"  # mergekit ignores the base's own parameters
    models = []
    for who, ref in (("father", recipe.father), ("mother", recipe.mother)):
        entry: dict[str, Any] = {"model": _model_ref(ref)}
        if not (father_is_base and who == "father"):
            params = {key: _conditional(vals) for key, vals in model_values[who].items()}
            if params:
                entry["parameters"] = params
        models.append(entry)
    config: dict[str, Any] = {"models": models, "merge_method": method.mergekit_name}
    if method.mergekit_base:
        config["base_model"] = _model_ref(recipe.father if recipe.base == "father" else recipe.base)
    elif method.mergekit_ancestor_base and recipe.base != "father":
        config["base_model"] = _model_ref(recipe.base)
    _tokenizer_source(recipe, method, config)
    shared = {key: _conditional(vals) for key, vals in shared_values.items()}
    if shared:
        config["parameters"] = shared
    config["dtype"] = "float32"
    if out_dtype:
        config["out_dtype"] = out_dtype

    header = _header(recipe, names)
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, width=120)


def _vocabularies_differ(recipe: Recipe) -> bool:
    """Whether both parents are local folders whose vocabularies need a plan (a broken tokenizer: one sentence)."""
    from pathlib import Path

    from darwin_core.merge.vocabulary import plan_vocabulary

    folders = [Path(ref.path) if ref.path else None for ref in (recipe.father, recipe.mother)]
    if not all(folder is not None and folder.is_dir() for folder in folders):
        return False
    return plan_vocabulary(folders[0], folders[1], "father") is not None


def _tokenizer_source(recipe: Recipe, method: Any, config: dict[str, Any]) -> None:
    """Add mergekit's `tokenizer_source` (and the `base_model` it reads) when the recipe needs one."""
    from darwin_core.parents.tokenizers import TokenizerSource

    source = recipe.tokenizer_source
    if source is TokenizerSource.FATHER and not _vocabularies_differ(recipe):
        return
    if recipe.base != "father":
        raise DarwinError("mergekit cannot express this recipe: parents whose vocabularies differ are bred with "
                          "base: father only (a common ancestor's tokenizer would be mergekit's base).")
    if "base_model" not in config:
        if method.mergekit_name != "linear":
            raise DarwinError(f"mergekit cannot express this recipe: its tokenizer_source reads the base model, and "
                              f"{method.name} without a common ancestor has none to give it.")
        config["base_model"] = _model_ref(recipe.father)
    config["tokenizer_source"] = source.mergekit_value(_model_ref(recipe.mother))


def _header(recipe: Recipe, names: list[str]) -> list[str]:
    """The YAML's comment lines: where it came from, and a warning where random masks make the children differ."""
    method = get_method(recipe.method)
    header = [
        f"# mergekit 0.1.5 config exported from Darwin recipe {recipe.recipe_hash[:16]}",
        "# (ratio = share of the mother; see darwin_core/merge/mergekit_export.py for the mapping)",
    ]
    if method.random_masks and any(d < 1.0 for pair in _all_densities(recipe, names) for d in pair):
        family = method.name.split("_")[0].upper()  # DARE, DELLA
        header.append(f"# {family} masks differ: mergekit draws them from torch's global RNG (--random-seed), "
                      "Darwin per tensor.")
    return header


def _check_fused_experts(recipe: Recipe, names: list[str]) -> None:
    """Refuse methods whose result depends on tensor boundaries for experts that mergekit fuses per layer."""
    method = get_method(recipe.method)
    for name in names:
        if not _EXPERT.match(name):
            continue
        plan = recipe.plan_for(name)
        if plan.source is not None:
            continue
        if not method.spans_whole_tensor(plan.params, base_is_father=recipe.base == "father"):
            continue
        why = method.whole_tensor_step
        raise DarwinError(
            f"mergekit cannot express this recipe exactly: mergekit 0.1.5 merges the experts of a layer as one fused "
            f"tensor, so {why} would span all experts, while Darwin computes it per expert tensor ({name})."
        )


def _check_copies(recipe: Recipe, names: list[str]) -> None:
    """Refuse copied tensors for methods whose mergekit config has no weights to express a copy with."""
    method = get_method(recipe.method)
    if method.mergekit_copies:
        return
    for name in names:
        if recipe.plan_for(name).source is not None:
            raise DarwinError(
                f"mergekit cannot express this recipe: {method.name} has no weights in mergekit, so the tensor {name}, "
                "which this recipe copies from one parent (frozen layer, transplant or tower), cannot be written."
            )


def _all_densities(recipe: Recipe, names: list[str]) -> Iterable[tuple[float, float]]:
    for name in names:
        plan = recipe.plan_for(name)
        if plan.source is None:
            yield (plan.params.density_father if recipe.base != "father" else 1.0, plan.params.density_mother)
