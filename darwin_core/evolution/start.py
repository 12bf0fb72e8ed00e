"""Where CMA-ES starts (`start:` in the config): the genome space's neutral point, or the genome that reproduces
the MRI prescription, so the search spends its budget around what the scan already suggests.

The MRI start genome per space:
- darwin-v6: the neutral genome with mri_trust = 1, so every tensor takes its prescribed ratio (the same genome as
  the `mri` reference line; the other genes keep their neutral values and only matter once CMA-ES moves trust);
- per-layer / per-layer-ffn: each layer's gene is the mean prescribed ratio of that layer's tensors (its FFN/MoE
  tensors only for per-layer-ffn);
- per-block-role: each block's attention and FFN genes are the mean prescribed ratio of those tensors in its layers.
A gene no prescribed tensor speaks for keeps its neutral value.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import fmean

from darwin_core.genome.spaces import ATTN_ROLES, FFN_ROLES, GenomeSpace, block_of


def mri_start_genome(space: GenomeSpace, mri_ratios: Mapping[str, float], layer_count: int) -> list[float]:
    """The genome of `space` that follows the prescription (see the module docstring), within its bounds."""
    from darwin_core.parents.anatomy import classify

    genome = dict(zip(space.names, space.default()))
    if "mri_trust" in genome:
        genome["mri_trust"] = 1.0
        return _clipped(space, genome)
    shares: dict[str, list[float]] = {}
    for name, ratio in mri_ratios.items():
        role = classify(name)
        if role.tower != "language" or role.layer is None:
            continue
        gene = _gene_of(space, role.layer, role.role, layer_count)
        if gene in genome:
            shares.setdefault(gene, []).append(float(ratio))
    genome.update({gene: fmean(values) for gene, values in shares.items()})
    return _clipped(space, genome)


def _gene_of(space: GenomeSpace, layer: int, role: str, layer_count: int) -> str | None:
    """The gene that sets a tensor of (layer, role) in a per-layer or per-block-role space, None for none."""
    names = space.names
    if getattr(space, "ffn_only", None) is not None:  # PerLayerSpace
        if space.ffn_only and role not in FFN_ROLES:
            return None
        return names[layer] if layer < len(names) else None
    blocks = getattr(space, "blocks", None)
    if blocks is not None:  # PerBlockRoleSpace
        kind = "attn" if role in ATTN_ROLES else "ffn" if role in FFN_ROLES else None
        return f"block_{block_of(layer, layer_count, blocks)}_{kind}" if kind else None
    return None


def _clipped(space: GenomeSpace, genome: Mapping[str, float]) -> list[float]:
    lower, upper = space.bounds
    return [min(max(float(genome[name]), low), high) for name, low, high in zip(space.names, lower, upper)]
