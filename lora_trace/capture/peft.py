"""PEFT internals, in one place: which modules are adapter layers, their adapter state and parameters, the
tuners and their configs, and target coverage with PEFT's own matching. Every other module asks here.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


def _keyed_containers(layer: Any) -> Iterator[Any]:
    """The tuner's adapter containers (lora_A, hada_w1_a, ...) that are keyed by adapter name."""
    for role in layer.adapter_layer_names:
        container = _container(layer, role)
        if container is not None and hasattr(container, "keys"):
            yield container


def held_adapters(layer: Any) -> set[str]:
    """The adapters this layer holds weights for, from the tuner's own list of adapter containers."""
    return {adapter for container in _keyed_containers(layer) for adapter in container.keys()}


def adapter_active(layer: Any, state: AdapterState) -> bool:
    """Whether the layer, in `state` (read by `adapter_state`), adds a delta of an adapter it holds. Asked per
    call: only the active adapters are looked up, in the containers until one holds them."""
    return any(state.contributes(a) and any(a in c for c in _keyed_containers(layer)) for a in state.active)


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


def base_candidates(tuners: dict[str, nn.Module], below: dict[str, Named], adapters: set[int]
                    ) -> list[tuple[str, nn.Parameter]]:
    """(qualified name, parameter) of the adapted models' parameters that would be a full fine-tune hiding
    under the adapter if they required grad (a blanket requires_grad_(True), prepare_model_for_kbit_training
    after get_peft_model). Left out: what PEFT trains on purpose (modules_to_save copies, trainable tokens,
    biases under bias="all" or "lora_only"), and anything outside the adapted model (a user's head)."""
    from peft.utils.other import AuxiliaryTrainingWrapper

    found = []
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
                if param is not None and id(param) not in adapters and not (biases and local == "bias"):
                    found.append((f"{prefix}.{name}.{local}", param))
    return found


def trainable_base(candidates: list[tuple[str, nn.Parameter]]) -> TrainableBase | None:
    """Which of the `base_candidates` require grad now, counted."""
    trainable = [(name, param) for name, param in candidates if param.requires_grad]
    if not trainable:
        return None
    return TrainableBase(len(trainable), sum(p.numel() for _, p in trainable), tuple(n for n, _ in trainable[:4]))


def _configs(module: nn.Module) -> list[Any]:
    config = getattr(module, "peft_config", None)
    return list(config.values()) if isinstance(config, dict) else []


@dataclass(frozen=True)
class SiteLayout:
    """What an adapter layer is, apart from its state: it changes only with the model's structure, so
    discovery may keep it from one trace to the next. Parameters are positions in the model's parameter list
    (`layout.Shape.params`): a layout never holds a tensor or a module."""

    module: str
    region: str
    layer_type: str
    tuner: str
    adapters: tuple[str, ...]  # held: the tuner's containers' keys
    params: tuple[tuple[str, str, str, int], ...]  # (qualified name, adapter, role, position), first holder only
    shared: tuple[str, ...]  # qualified names of parameters another layer holds


def site_layouts(modules: dict[str, nn.Module], position: Callable[[nn.Parameter], int]) -> tuple[SiteLayout, ...]:
    """Every adapter layer's layout; `position(parameter)`: its position in the model's parameter list. A
    parameter several layers share (VB-LoRA's vector bank, Lily's B) is listed at the first layer holding it
    and named in the others' `shared`."""
    named_by_id: dict[int, str] = {}
    layouts = []
    for name, layer in modules.items():
        owned, shared = [], []
        for qualified, adapter, role, param in _adapter_parameters(name, layer):
            if id(param) in named_by_id:
                shared.append(named_by_id[id(param)])
            else:
                named_by_id[id(param)] = qualified
                owned.append((qualified, adapter, role, position(param)))
        layouts.append(SiteLayout(name, region_of(name), type(layer.get_base_layer()).__name__, tuner_name(layer),
                                  tuple(sorted(held_adapters(layer))), tuple(owned), tuple(dict.fromkeys(shared))))
    return tuple(layouts)


def read_sites(layouts: tuple[SiteLayout, ...], layers: list[nn.Module], params: list[nn.Parameter],
               memo: dict[Any, Any] | None = None) -> tuple[LoraSite, ...]:
    """Each layer's state now (active, merged, disabled, scalings, requires_grad); `layers` in the order of
    `layouts`, `params` the model's parameter list. `memo` (kept with a layout): the state read last time per
    layer and its record, reused when it reads the same. Which factors are all zero is read here only for
    sharded (DTensor) parameters, whose ranks must answer alike for the gather; otherwise at the block's end,
    where a gradient that arrived exactly zero asks it (`zeros_at_start`)."""
    every = [params[p[3]] for layout in layouts for p in layout.params]
    if any(hasattr(cls, "to_local") for cls in set(map(type, every))):
        zero, shard = _all_zero_flags(every)
    else:
        zero = shard = [None] * len(every)
    states = zip(map(torch.Tensor.numel, every), [p.requires_grad for p in every], zero, shard, strict=True)
    memo = memo if memo is not None else {}
    sites = []
    for at, (layout, layer) in enumerate(zip(layouts, layers, strict=True)):
        scaling = getattr(layer, "scaling", None)
        key = (tuple(layer.active_adapters), bool(layer.merged), bool(layer.disable_adapters),
               tuple((a, float(s)) for a, s in sorted(scaling.items()) if isinstance(s, (int, float)))
               if isinstance(scaling, dict) else (), tuple(next(states) for _ in layout.params))
        known = memo.get(at)
        if known is None or known[0] != key:
            active, merged, disabled, scalings, state = key
            known = memo[at] = (key, LoraSite(
                module=layout.module, region=layout.region, layer_type=layout.layer_type, adapters=layout.adapters,
                active_adapters=active, merged=merged, disabled=disabled, scalings=scalings,
                params=tuple(LoraParam(qualified, adapter, role, *values)
                             for (qualified, adapter, role, _), values in zip(layout.params, state, strict=True)),
                tuner=layout.tuner, shared=layout.shared))
        sites.append(known[1])
    return tuple(sites)


def zeros_at_start(sites: tuple[LoraSite, ...], names: set[str], start_values: Callable[[str], torch.Tensor | None],
                   memo: dict[Any, Any] | None = None) -> tuple[LoraSite, ...]:
    """`sites` with all_zero filled for the parameters `names`, each from its value at the start of the step
    (`start_values`: None where that value is no longer known: it stays unknown). `memo` (kept with a layout):
    the record filled last time for the same record and answers, reused."""
    wanted = [p.name for site in sites for p in site.params if p.name in names and p.all_zero is None]
    known = [(name, value) for name, value in zip(wanted, map(start_values, wanted), strict=True) if value is not None]
    if not known:
        return sites
    flags = dict(zip([name for name, _ in known], _all_zero_flags([value for _, value in known])[0], strict=True))
    memo = memo if memo is not None else {}
    filled = []
    for site in sites:
        answers = tuple(flags.get(p.name) for p in site.params)
        if answers.count(None) == len(answers):
            filled.append(site)
            continue
        kept = memo.get(("zeros", site.module))
        if kept is None or kept[0] is not site or kept[1] != answers:
            kept = memo[("zeros", site.module)] = (site, answers, _with_zeros(site, flags))
        filled.append(kept[2])
    return tuple(filled)


def _with_zeros(site: LoraSite, flags: dict[str, bool | None]) -> LoraSite:
    return dataclasses.replace(site, params=tuple(p if p.name not in flags else dataclasses.replace(
        p, all_zero=flags[p.name]) for p in site.params))


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


def _all_zero_flags(params: list[nn.Parameter]) -> tuple[list[bool | None], list[bool | None]]:
    """Whether each parameter is all zero (None where unknown: meta, or sharded), and the same of this rank's
    shard of each sharded DTensor (None for the others): the whole answer for a shard needs every rank, and
    no collective runs here. One norm call per device for all."""
    whole: list[bool | None] = [None] * len(params)
    shard: list[bool | None] = [None] * len(params)
    sharded = {cls: hasattr(cls, "to_local") for cls in set(map(type, params))}  # per class: one lookup each
    summed: dict[torch.device, list[tuple[list[bool | None], int, torch.Tensor]]] = {}
    rest = []
    for i, p in enumerate(params):
        if p.is_meta:
            continue
        flags = whole
        if sharded[type(p)]:
            p, flags = p.to_local(), shard
        if p.layout == torch.strided and p.dtype in _SUMMABLE:
            summed.setdefault(p.device, []).append((flags, i, p))
        else:
            rest.append((flags, i, p))
    # sum of |x| is 0 exactly when every x is 0 (no cancellation, a positive value never rounds to 0, NaN stays
    # NaN): one call per device; other tensors (integer, float8, sparse) one any() each
    with torch.no_grad():
        for group in summed.values():
            values = torch.stack(torch._foreach_norm([p for _, _, p in group], 1)).eq(0).tolist()
            for (flags, i, _), value in zip(group, values, strict=True):
                flags[i] = value
        for flags, i, p in rest:
            flags[i] = not bool(p.any())
    return whole, shard


_SUMMABLE = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128})


def peft_configs(named: Named) -> dict[str, dict[str, dict[str, Any]]]:
    """Prefix of each PeftModel (or LoRA tuner) -> adapter name -> its config as JSON-friendly values.
    `named`: the model's modules, or only those that held a config at discovery."""
    configs: dict[str, dict[str, dict[str, Any]]] = {}
    for prefix, module in named:
        if "peft_config" not in module.__dict__ and not config_on_class(type(module)):
            continue  # a plain layer: getattr of a missing attribute costs nn.Module a raised AttributeError
        config = getattr(module, "peft_config", None)
        if not isinstance(config, dict) or not config:
            continue
        if any(p == "" or prefix.startswith(p + ".") for p in configs):
            continue  # the LoraModel inside a PeftModel repeats its parent's config
        configs[prefix] = {adapter: _jsonable(vars(c)) for adapter, c in config.items()}
    return configs


@functools.cache
def config_on_class(cls: type) -> bool:
    """Whether a module of this class may hold a `peft_config` outside its __dict__: PeftModel's property, or
    a wrapper forwarding attributes to the module it wraps (FSDP1). A tuner keeps its own in its __dict__."""
    return hasattr(cls, "peft_config") or getattr(cls, "__getattr__", None) is not nn.Module.__getattr__


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
