"""Finding the parts of a loaded Hugging Face causal LM that the MRI and the health check touch.

The MRI works on any architecture by looking at a model from outside, with forward hooks, instead of
re-implementing each architecture's forward pass. For that it needs three handles, found generically here:
the text decoder ("backbone", whose output is the final hidden state after the final norm), its list of
decoder layers, and the MoE router modules (for MoE models). Everything architecture-specific about a
layer's call signature (positional per-layer inputs in Gemma 4, position embeddings, GatedDeltaNet layers in
Qwen3.5, tuple outputs in older models) is absorbed by `skip_layer`, which only needs "the first argument is
the hidden state".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from darwin_core.errors import DarwinError

# Config keys that name the number of routed experts in the MoE families we support (Qwen3-MoE and Qwen3.5-MoE:
# num_experts; Mixtral: num_local_experts; Gemma 4: num_experts with enable_moe_block).
_EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
_TOP_K_KEYS = ("num_experts_per_tok", "top_k_experts", "moe_top_k")


def backbone(model: nn.Module) -> nn.Module:
    """The text decoder of a causal LM: the module whose output's `last_hidden_state` is the final hidden state.

    `get_decoder()` (transformers 5) covers plain CausalLMs (`model.model`) and multimodal wrappers
    (`model.model.language_model`); a bare base model is its own backbone.
    """
    if hasattr(model, "get_decoder"):
        decoder = model.get_decoder()
        if isinstance(decoder, nn.Module):
            return decoder
    return getattr(model, "model", model)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks, in execution order.

    `backbone.layers` in every family we know; otherwise the largest ModuleList inside the backbone whose
    children all share one class (a stack of blocks, not a list of heterogeneous heads).
    """
    body = backbone(model)
    layers = getattr(body, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        return layers
    best: nn.ModuleList | None = None
    for module in body.modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if best is None or len(module) > len(best):
            best = module
    if best is None:
        raise DarwinError("Could not find the decoder layers of this model, so its layers cannot be scanned.")
    return best


def config_value(config: object, keys: tuple[str, ...]) -> int | None:
    """First positive integer among `keys` on a (possibly nested text) config, else None."""
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        for key in keys:
            value = cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def is_moe_config(config: object) -> bool:
    """True when the config declares routed experts (Gemma 4 only when its MoE block is enabled)."""
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        enabled = cfg.get("enable_moe_block") if isinstance(cfg, dict) else getattr(cfg, "enable_moe_block", None)
        if enabled is False:
            return False
    return config_value(config, _EXPERT_COUNT_KEYS) is not None


def expert_count(config: object) -> int | None:
    return config_value(config, _EXPERT_COUNT_KEYS)


def experts_per_token(config: object) -> int | None:
    return config_value(config, _TOP_K_KEYS)


@dataclass(frozen=True)
class Router:
    """A router (gate) module and the decoder layer it belongs to."""

    layer: int
    name: str
    module: nn.Module


def _router_classes(model: nn.Module) -> tuple[type, ...]:
    """Router classes that transformers itself records as `router_logits` (`_can_record_outputs`)."""
    classes: list[type] = []
    for module in model.modules():
        recordable = getattr(module, "_can_record_outputs", None)
        if not isinstance(recordable, dict) or "router_logits" not in recordable:
            continue
        spec = recordable["router_logits"]
        target = getattr(spec, "target_class", spec)
        if isinstance(target, type) and target not in classes:
            classes.append(target)
    return tuple(classes)


def routers(model: nn.Module) -> list[Router]:
    """The MoE routers, one per MoE layer, in layer order (empty for dense models).

    Found by the classes transformers records as router logits; failing that, by name (`router`, or a `gate`
    inside an MoE block whose weight has one row per expert).
    """
    layers = decoder_layers(model)
    classes = _router_classes(model)
    n_experts = expert_count(getattr(model, "config", None))
    found: list[Router] = []
    for index, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if not name:
                continue
            leaf = name.rsplit(".", 1)[-1]
            if classes:
                hit = isinstance(module, classes)
            else:
                weight = getattr(module, "weight", None)
                hit = leaf in ("router", "gate") and isinstance(weight, torch.Tensor) and weight.dim() == 2 and (
                    n_experts is not None and weight.shape[0] == n_experts
                )
            if hit:
                found.append(Router(layer=index, name=name, module=module))
                break
    return found


@contextlib.contextmanager
def skip_layer(layer: nn.Module) -> Iterator[None]:
    """Within the block, `layer` behaves as the identity: its output is replaced by its input hidden state.

    The layer still runs (so side effects later layers rely on, such as Gemma 4's shared key/value states,
    still happen); only what it hands to the next layer changes. Tuple outputs (older transformers layers
    return `(hidden, ...)`) keep their other elements.
    """
    captured: dict[str, torch.Tensor] = {}

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(hidden, torch.Tensor):
            raise DarwinError("A decoder layer was called without a hidden-state tensor, so it cannot be skipped.")
        # A clone guards against layers that update their input in place.
        captured["hidden"] = hidden.clone()

    def after(module: nn.Module, args: tuple, kwargs: dict, output: object) -> object:
        hidden = captured.pop("hidden")
        if isinstance(output, tuple):
            return (hidden.to(output[0].dtype),) + tuple(output[1:])
        if isinstance(output, torch.Tensor):
            return hidden.to(output.dtype)
        raise DarwinError("A decoder layer returned something other than a tensor or tuple, so it cannot be skipped.")

    handles = [
        layer.register_forward_pre_hook(before, with_kwargs=True),
        layer.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
