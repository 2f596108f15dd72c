"""PEFT internals, in one place: which modules are adapter layers, their adapter state and parameters, the
tuners and their configs, and target coverage with PEFT's own matching. Every other module asks here.
"""

from __future__ import annotations

import enum
import functools
from typing import Any

import torch
from torch import nn

from ..core.records import AdapterState, LoraParam, LoraSite, TargetEntry
from ..core.regions import region_of
from .matching import candidate_modules, candidate_parameters, entry_table

Named = list[tuple[str, nn.Module]]


def under(named: Named, prefix: str) -> Named:
    """The (name relative to `prefix`, module) pairs below `prefix`."""
    start = prefix + "."
    return [(name[len(start):], module) for name, module in named if name.startswith(start)]


@functools.cache
def _lora_layer_class() -> type:
    from peft.tuners.lora import LoraLayer

    return LoraLayer


def is_lora_layer(module: nn.Module) -> bool:
    return isinstance(module, _lora_layer_class())


def adapter_active(layer: Any, state: AdapterState) -> bool:
    """Whether the layer, in `state` (read by `adapter_state`), adds a LoRA delta of an adapter it holds."""
    held = set(layer.lora_A) | set(getattr(layer, "lora_embedding_A", {}))
    return any(a in held and state.contributes(a) for a in state.active)


def adapter_state(layer: Any) -> AdapterState:
    """The layer's adapter state right now (read at every call: the step may change it)."""
    active = tuple(layer.active_adapters)
    zero = tuple(a for a in active if isinstance(layer.scaling.get(a), (int, float)) and layer.scaling[a] == 0)
    return AdapterState(active, bool(layer.disable_adapters), bool(layer.merged), zero)


def describe_sites(modules: dict[str, nn.Module]) -> tuple[tuple[LoraSite, ...], dict[int, str]]:
    """Snapshot every LoRA layer's adapter state and parameters (one device sync for all zero checks);
    also id(LoRA parameter) -> its qualified name."""
    entries: list[tuple[str, nn.Module, list[tuple[str, str, str, nn.Parameter]]]] = []
    for name, layer in modules.items():
        params = []
        for role in layer.adapter_layer_names:  # lora_A, lora_B, lora_embedding_A/B, lora_magnitude_vector
            container = getattr(layer, role, None)
            for adapter, holder in (container.items() if container is not None else ()):
                owned = [("", holder)] if isinstance(holder, nn.Parameter) else holder.named_parameters()
                for local, param in owned:
                    params.append((".".join(filter(None, (name, role, adapter, local))), adapter, role, param))
        entries.append((name, layer, params))
    flat = [p for _, _, params in entries for p in params]
    zero_flags = _all_zero_flags([p[3] for p in flat])
    param_names = {id(param): qualified for qualified, _, _, param in flat}
    sites, index = [], 0
    for name, layer, params in entries:
        lora_params = []
        for qualified, adapter, role, param in params:
            lora_params.append(LoraParam(qualified, adapter, role, param.numel(), param.requires_grad,
                                         zero_flags[index]))
            index += 1
        adapters = sorted(set(layer.lora_A) | set(getattr(layer, "lora_embedding_A", {})))
        sites.append(LoraSite(
            module=name,
            region=region_of(name),
            layer_type=type(layer.get_base_layer()).__name__,
            adapters=tuple(adapters),
            active_adapters=tuple(layer.active_adapters),
            merged=bool(layer.merged),
            disabled=bool(layer.disable_adapters),
            scalings=tuple((a, float(s)) for a, s in sorted(layer.scaling.items()) if isinstance(s, (int, float))),
            params=tuple(lora_params),
        ))
    return tuple(sites), param_names


def _all_zero_flags(params: list[nn.Parameter]) -> list[bool | None]:
    flags: list[bool | None] = [None] * len(params)
    by_device: dict[torch.device, list[int]] = {}
    for i, p in enumerate(params):
        if p.device.type != "meta" and not hasattr(p, "to_local"):  # a sharded DTensor: unknown without a collective
            by_device.setdefault(p.device, []).append(i)
    with torch.no_grad():
        for indices in by_device.values():
            values = torch.stack([(params[i] == 0).all() for i in indices]).tolist()
            for i, value in zip(indices, values, strict=True):
                flags[i] = bool(value)
    return flags


def peft_configs(named: Named) -> dict[str, dict[str, dict[str, Any]]]:
    """Prefix of each PeftModel (or LoRA tuner) -> adapter name -> its config as JSON-friendly values."""
    configs: dict[str, dict[str, dict[str, Any]]] = {}
    for prefix, module in named:
        config = getattr(module, "peft_config", None)
        if not isinstance(config, dict) or not config:
            continue
        if any(p == "" or prefix.startswith(p + ".") for p in configs):
            continue  # the LoraModel inside a PeftModel repeats its parent's config
        configs[prefix] = {adapter: _jsonable(vars(c)) for adapter, c in config.items()}
    return configs


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def lora_tuners(named: Named) -> dict[str, nn.Module]:
    """Where each PEFT LoRA tuner's base model sits (`x.model.base_model.model`) -> that tuner."""
    from peft.tuners.tuners_utils import BaseTuner

    tuners = {}
    for name, module in named:
        if isinstance(module, BaseTuner) and any(_is_lora_config(c) for c in module.peft_config.values()):
            tuners[f"{name}.model" if name else "model"] = module
    return tuners


def _is_lora_config(config: object) -> bool:
    return str(getattr(getattr(config, "peft_type", None), "value", "")) == "LORA"


def describe_targets(tuners: dict[str, nn.Module], named: Named) -> tuple[TargetEntry, ...]:
    """Per-entry coverage of every LoRA config: target_modules rows, then target_parameters rows."""
    rows: list[TargetEntry] = []
    for prefix, tuner in tuners.items():
        below = under(named, prefix)
        modules = candidate_modules(below)
        parameters = None
        for adapter, config in sorted(tuner.peft_config.items()):
            if not _is_lora_config(config):
                continue
            if getattr(config, "target_parameters", None) and parameters is None:
                parameters = candidate_parameters(below)
            rows.extend(entry_table(config, modules, prefix=prefix, adapter=adapter, parameters=parameters))
    return tuple(rows)
