"""PEFT internals, in one place: which modules are adapter layers, their adapter state and parameters, the
tuners and their configs, and target coverage with PEFT's own matching. Every other module asks here.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..core.records import AdapterState, LoraParam, LoraSite, TargetEntry, TrainableBase
from ..core.regions import region_of
from .matching import candidate_modules, candidate_parameters, entry_table

Named = list[tuple[str, nn.Module]]


def under(named: Named, prefix: str) -> Named:
    """The (name relative to `prefix`, module) pairs below `prefix`."""
    start = prefix + "."
    return [(name[len(start):], module) for name, module in named if name.startswith(start)]


@functools.cache
def _tuner_layer_class() -> type:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


# Tuners whose gradients lora-trace reasons about: each has a healthy and a broken scenario against a real
# backward (tests/capture/test_tuners.py). Any other tuner's layers get only the configuration checks.
SUPPORTED_TUNERS = frozenset({"LoRA", "AdaLora", "LoHa", "LoKr", "OFT", "BOFT", "IA3", "Vera", "FourierFT",
                              "HRA", "VBLoRA", "RandLora", "C3A", "Miss", "Shira", "Road", "WaveFT", "LNTuning",
                              "TrainableTokens", "Beft", "Deft", "Delora", "Glora", "Gralora", "Hira", "Lily",
                              "OSF", "Peanut", "Psoft", "Pvera", "Supertuning", "TinyLora", "UniLora"})


def is_adapter_layer(module: nn.Module) -> bool:
    """A layer of any PEFT tuner that adds weights: a `BaseTunerLayer` naming its adapter parameters."""
    return isinstance(module, _tuner_layer_class()) and bool(getattr(module, "adapter_layer_names", ()))


def is_lora_layer(module: nn.Module) -> bool:
    """An adapter layer of a tuner lora-trace reasons about ("LoRA" in this package means any of them)."""
    return is_adapter_layer(module) and tuner_name(module) in SUPPORTED_TUNERS


def tuner_name(layer: nn.Module) -> str:
    """The tuner's name, from the layer class it derives from (`LoHaLayer` -> "LoHa", `LoraLayer` -> "LoRA")."""
    return _tuner_name(type(layer))


@functools.cache
def _tuner_name(cls: type) -> str:
    base = _tuner_layer_class()
    stems = [c.__name__[:-len("Layer")] for c in cls.__mro__
             if c is not base and issubclass(c, base) and c.__name__.endswith("Layer") and c.__name__ != "LycorisLayer"]
    stem = stems[0] if stems else cls.__name__  # the most derived: AdaLoRA layers are LoRA layers too
    return "LoRA" if stem == "Lora" else stem


def _container(layer: Any, role: str) -> Any:
    """`getattr(layer, role, None)`, reading the module's own table first: nn.Module.__getattr__ is the slow
    path for submodules, and a trace asks for every role of every adapter layer."""
    modules = getattr(layer, "_modules", None)
    found = modules.get(role) if modules is not None else None
    return found if found is not None else getattr(layer, role, None)


def held_adapters(layer: Any) -> set[str]:
    """The adapters this layer holds weights for, from the tuner's own list of adapter containers."""
    held: set[str] = set()
    for role in layer.adapter_layer_names:
        container = _container(layer, role)
        if container is not None and hasattr(container, "keys"):
            held.update(container.keys())
    return held


def adapter_active(layer: Any, state: AdapterState) -> bool:
    """Whether the layer, in `state` (read by `adapter_state`), adds a delta of an adapter it holds. Asked per
    call: only the active adapters are looked up, in the containers until one holds them."""
    return any(state.contributes(a) and _holds(layer, a) for a in state.active)


def _holds(layer: Any, adapter: str) -> bool:
    for role in layer.adapter_layer_names:
        container = _container(layer, role)
        if container is not None and hasattr(container, "keys") and adapter in container:
            return True
    return False


def adapter_state(layer: Any) -> AdapterState:
    """The layer's adapter state right now (read at every call: the step may change it)."""
    active = tuple(layer.active_adapters)
    scaling = getattr(layer, "scaling", None)
    scaling = scaling if isinstance(scaling, dict) else {}
    zero = tuple(a for a in active if isinstance(scaling.get(a), (int, float)) and scaling[a] == 0)
    return AdapterState(active, bool(layer.disable_adapters), bool(layer.merged), zero)


def expand_all_linear(config: Any, model: nn.Module) -> Any:
    """PEFT's own expansion of the "all-linear" shorthand into the linear layers it adapts (all but the output
    layer), so `targets` shows what get_peft_model would select."""
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    return _maybe_include_all_linear_layers(config, model)


def adapter_flags(layer: Any) -> tuple[Any, ...]:
    """What `adapter_state` depends on, read as plain attributes (a few hundred layers per step for watch())."""
    active = getattr(layer, "_active_adapter", None)
    scaling = getattr(layer, "scaling", None)
    return (tuple(active) if isinstance(active, list) else active, getattr(layer, "_disable_adapters", None),
            tuple(getattr(layer, "merged_adapters", ())), tuple(scaling.items()) if isinstance(scaling, dict) else None)


def unsupported_tuners(layers: dict[str, nn.Module], named: Named) -> tuple[tuple[str, int], ...]:
    """(tuner, layer count) of the adapter `layers` lora-trace does not reason about, and of prompt-learning
    adapters (no layer at all: a prompt encoder on a PeftModel), which get only the configuration checks."""
    from peft import PeftModel

    counts: dict[str, int] = {}
    for layer in layers.values():
        counts[tuner_name(layer)] = counts.get(tuner_name(layer), 0) + 1
    for _, module in named:
        for config in _configs(module) if isinstance(module, PeftModel) else ():
            if getattr(config, "is_prompt_learning", False):
                counts.setdefault(str(getattr(config.peft_type, "value", config.peft_type)), 0)
    return tuple(sorted(counts.items()))


def adapter_parameter_ids(layers: dict[str, nn.Module]) -> set[int]:
    """id() of every parameter in these tuner layers' adapter containers."""
    return {id(p) for name, layer in layers.items() for _, _, _, p in _adapter_parameters(name, layer)}


def trainable_base(tuners: dict[str, nn.Module], below: dict[str, Named], adapters: set[int]) -> TrainableBase | None:
    """Parameters of the adapted models that require grad beside the adapters: a full fine-tune hiding under
    the adapter (a blanket requires_grad_(True), prepare_model_for_kbit_training after get_peft_model). Not
    counted: what PEFT trains on purpose (modules_to_save copies, trainable tokens, biases under bias="all" or
    "lora_only"), and anything outside the adapted model (a projection head of the user's)."""
    from peft.utils.other import AuxiliaryTrainingWrapper

    count, values, examples = 0, 0, []
    for prefix, tuner in tuners.items():
        biases = any(getattr(c, "bias", "none") not in ("none", None) for c in tuner.peft_config.values())
        inside: str | None = None  # the wrapper being walked: named_modules() lists its sub-modules right after it
        for name, module in below[prefix]:
            if inside is not None and name.startswith(inside):
                continue
            if isinstance(module, AuxiliaryTrainingWrapper):
                inside = name + "."
                continue
            for local, param in module._parameters.items():
                if param is None or not param.requires_grad or id(param) in adapters or (biases and local == "bias"):
                    continue
                count += 1
                values += param.numel()
                if len(examples) < 4:
                    examples.append(f"{prefix}.{name}.{local}")
    return TrainableBase(count, values, tuple(examples)) if count else None


def _configs(module: nn.Module) -> list[Any]:
    config = getattr(module, "peft_config", None)
    return list(config.values()) if isinstance(config, dict) else []


def describe_sites(modules: dict[str, nn.Module]
                   ) -> tuple[tuple[LoraSite, ...], dict[int, str], tuple[tuple[str, nn.Parameter], ...]]:
    """Snapshot every adapter layer's state and parameters (one device sync for all zero checks); also
    id(adapter parameter) -> its qualified name, and (qualified name, parameter) in discovery order. A
    parameter several layers share (VB-LoRA's vector bank, Lily's B) is listed at the first layer holding it
    and named in the others' `shared`."""
    param_names: dict[int, str] = {}
    owned: list[list[tuple[str, str, str, nn.Parameter]]] = []
    shared: list[list[int]] = []
    for name, layer in modules.items():
        owned.append([])
        shared.append([])
        for qualified, adapter, role, param in _adapter_parameters(name, layer):
            if id(param) in param_names:
                shared[-1].append(id(param))
            else:
                param_names[id(param)] = qualified
                owned[-1].append((qualified, adapter, role, param))
    every = [p[3] for params in owned for p in params]
    zero_flags, shard_flags = iter(_all_zero_flags(every)), iter(_all_zero_flags(every, shards=True))
    sites = []
    for (name, layer), params, others in zip(modules.items(), owned, shared, strict=True):
        scaling = getattr(layer, "scaling", None)
        sites.append(LoraSite(
            module=name,
            region=region_of(name),
            layer_type=type(layer.get_base_layer()).__name__,
            adapters=tuple(sorted(held_adapters(layer))),
            active_adapters=tuple(layer.active_adapters),
            merged=bool(layer.merged),
            disabled=bool(layer.disable_adapters),
            scalings=tuple((a, float(s)) for a, s in sorted(scaling.items()) if isinstance(s, (int, float)))
            if isinstance(scaling, dict) else (),
            params=tuple(LoraParam(qualified, adapter, role, param.numel(), param.requires_grad, next(zero_flags),
                                   next(shard_flags)) for qualified, adapter, role, param in params),
            tuner=tuner_name(layer),
            shared=tuple(dict.fromkeys(param_names[key] for key in others)),
        ))
    return tuple(sites), param_names, tuple((p[0], p[3]) for params in owned for p in params)


def _adapter_parameters(name: str, layer: nn.Module) -> Iterator[tuple[str, str, str, nn.Parameter]]:
    """(qualified name, adapter, role, parameter) of every parameter in the tuner's adapter containers."""
    for role in layer.adapter_layer_names:  # lora_A, lora_B, hada_w1_a, oft_R, vera_lambda_b, ...
        container = _container(layer, role)
        for adapter, holder in (container.items() if hasattr(container, "items") else ()):
            if isinstance(holder, nn.Module):
                own = holder._parameters if not holder._modules else None  # a leaf (nn.Linear): its own table
                pairs = ((k, v) for k, v in own.items() if v is not None) if own is not None else \
                    holder.named_parameters()
                for local, param in pairs:
                    yield ".".join(filter(None, (name, role, adapter, local))), adapter, role, param
            elif isinstance(holder, nn.Parameter):
                yield f"{name}.{role}.{adapter}", adapter, role, holder


def _all_zero_flags(params: list[nn.Parameter], *, shards: bool = False) -> list[bool | None]:
    """Whether each parameter is all zero; None where unknown. A sharded DTensor's answer needs every rank
    (no collective here): with `shards`, the flags are of this rank's shard of the sharded ones only."""
    flags: list[bool | None] = [None] * len(params)
    by_device: dict[torch.device, list[int]] = {}
    for i, p in enumerate(params):
        if p.device.type != "meta" and hasattr(p, "to_local") == shards:
            by_device.setdefault(p.device, []).append(i)
    local = [p.to_local() if shards else p for p in params] if by_device else params
    with torch.no_grad():
        for indices in by_device.values():
            values = torch.stack([local[i].any() for i in indices]).logical_not().tolist()  # no non-zero: all zero
            for i, value in zip(indices, values, strict=True):
                flags[i] = bool(value)
    return flags


def peft_configs(named: Named) -> dict[str, dict[str, dict[str, Any]]]:
    """Prefix of each PeftModel (or LoRA tuner) -> adapter name -> its config as JSON-friendly values."""
    configs: dict[str, dict[str, dict[str, Any]]] = {}
    for prefix, module in named:
        if "peft_config" not in module.__dict__ and not _config_on_class(type(module)):
            continue  # a plain layer: getattr of a missing attribute costs nn.Module a raised AttributeError
        config = getattr(module, "peft_config", None)
        if not isinstance(config, dict) or not config:
            continue
        if any(p == "" or prefix.startswith(p + ".") for p in configs):
            continue  # the LoraModel inside a PeftModel repeats its parent's config
        configs[prefix] = {adapter: _jsonable(vars(c)) for adapter, c in config.items()}
    return configs


@functools.cache
def _config_on_class(cls: type) -> bool:
    return hasattr(cls, "peft_config")  # PeftModel's property; a tuner keeps its own in its __dict__


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


def adapter_tuners(named: Named) -> dict[str, nn.Module]:
    """Where each PEFT tuner that targets modules sits (`x.model.base_model.model`) -> that tuner."""
    from peft.tuners.tuners_utils import BaseTuner

    tuners = {}
    for name, module in named:
        if isinstance(module, BaseTuner) and any(_targets_modules(c) for c in module.peft_config.values()):
            tuners[f"{name}.model" if name else "model"] = module
    return tuners


def _targets_modules(config: object) -> bool:
    return getattr(config, "target_modules", None) is not None or bool(getattr(config, "target_parameters", None))


def describe_targets(tuners: dict[str, nn.Module], below_all: dict[str, Named]) -> tuple[TargetEntry, ...]:
    """Per-entry coverage of every adapter config: target_modules rows, then target_parameters rows.
    `below_all`: each tuner's prefix -> the (relative name, module) pairs below it."""
    rows: list[TargetEntry] = []
    for prefix, tuner in tuners.items():
        below = below_all[prefix]
        modules = candidate_modules(below)
        parameters = None
        for adapter, config in sorted(tuner.peft_config.items()):
            if not _targets_modules(config):
                continue
            if getattr(config, "target_parameters", None) and parameters is None:
                parameters = candidate_parameters(below)
            rows.extend(entry_table(config, modules, prefix=prefix, adapter=adapter, parameters=parameters))
    return tuple(rows)
