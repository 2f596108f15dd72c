"""Find what there is to trace: unwrap DDP / torch.compile, find PEFT LoRA layers and regions."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import torch
from torch import nn

from ..core.errors import InvalidModelError
from ..core.records import LoraSite, TargetEntry, TrainableBase
from ..core.regions import region_of
from .layout import Layout, Shape, keep_layout, kept_layout, own_attribute, walk
from .matching import candidate_modules
from .peft import (
    Named,
    adapter_parameter_ids,
    adapter_tuners,
    base_candidates,
    describe_targets,
    is_adapter_layer,
    is_lora_layer,
    read_sites,
    site_layouts,
    trainable_base,
    under,
    unsupported_tuners,
)

_WRAPPER_SEGMENTS = ("_orig_mod",)  # clean_name checks for it directly


def unwrap(model: object) -> nn.Module:
    """The module whose `named_modules()` names everything: DDP's `.module`, compile's `._orig_mod` removed."""
    if not isinstance(model, nn.Module):
        raise InvalidModelError(
            f"lora-trace traces a torch.nn.Module; got {type(model).__name__}. Pass the model you train "
            "(a PeftModel, a module holding PeftModels, or a DDP / torch.compile wrapper of one)."
        )
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def is_compiled(model: object) -> bool:
    """Whether torch.compile wrapped the model (or the module DDP wraps)."""
    while isinstance(model, nn.Module):
        if hasattr(model, "_orig_mod"):
            return True
        model = getattr(model, "module", None)
    return False


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside wrappers such as Accelerate's AcceleratedOptimizer (hooks go on it)."""
    while optimizer is not None and isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidModelError(
            f"optimizer= takes the torch.optim.Optimizer that trains the model (or a wrapper holding one in "
            f"`.optimizer`, such as Accelerate's); got {type(optimizer).__name__}. Leave it out to skip the "
            "update checks.")
    return optimizer


def clean_name(name: str) -> str:
    """Drop wrapper segments (`_orig_mod` of compiled submodules) so names compare across wrappers."""
    if "_orig_mod" not in name:  # the only wrapper segment; a generator per name was 20% of entering a trace
        return name
    return ".".join(p for p in name.split(".") if p not in _WRAPPER_SEGMENTS)


def named_modules(root: nn.Module) -> Named:
    """Every (clean name, module) of the model: walked once per trace, since a walk of a 7B model is slow."""
    return [(clean_name(name), module) for name, module in root.named_modules()]


def lora_modules(root: nn.Module | Named) -> dict[str, nn.Module]:
    """Qualified name -> adapter layer of a tuner lora-trace reasons about, in model order."""
    named = named_modules(root) if isinstance(root, nn.Module) else root
    return {name: module for name, module in named if is_lora_layer(module)}


def adapter_layers(named: Named) -> dict[str, nn.Module]:
    """Qualified name -> adapter layer of any PEFT tuner, in model order."""
    return {name: module for name, module in named if is_adapter_layer(module)}


def region_modules(named: Named, adapters: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
    """Region name -> its module: the handful of modules whose forward says "this part of the model ran".
    An adapter layer's own parts (lora_A, base_layer, ...) make no region: else a LoRA wrapper outside any
    repeated block would become a region of its own, nested in the region that really holds it."""
    adapters = adapters or {}
    names: set[str] = set()
    inside = None  # the adapter layer being walked: named_modules() lists its parts right after it
    for name, _ in named:
        if inside is not None and name.startswith(inside):
            continue
        inside = f"{name}." if name in adapters else None
        if name:
            names.add(region_of(name))
    modules = dict(named)
    return {name: modules[name] for name in sorted(names) if name in modules and name}


@dataclass(frozen=True)
class Discovery:
    """Everything a tracer needs to know about the model before the step runs."""

    root: nn.Module
    names: tuple[str, ...]  # every module's name, in named_modules() order
    modules: list[nn.Module]  # the modules of `names`, same order
    lora: dict[str, nn.Module]
    sites: tuple[LoraSite, ...]
    regions: dict[str, nn.Module]
    param_names: dict[int, str]  # id(LoRA parameter) -> qualified name
    tuners: dict[str, nn.Module]  # base-model prefix -> PEFT tuner
    targets: tuple[TargetEntry, ...]
    unsupported: tuple[tuple[str, int], ...] = ()  # (tuner, layers) lora-trace only checks the configuration of
    trainable_base: TrainableBase | None = None  # base parameters left trainable beside the adapters

    params: tuple[tuple[str, nn.Parameter], ...] = ()  # (qualified name, LoRA parameter), in discovery order
    enclosing: tuple[tuple[str, nn.Module], ...] = ()  # modules with a forward enclosing an adapter layer
    holders: tuple[tuple[str, nn.Module], ...] = ()  # modules that are or hold an adapter layer, model order
    every: tuple[nn.Parameter, ...] = ()  # every parameter of the model once
    configured: tuple[tuple[str, nn.Module], ...] = ()  # modules holding a `peft_config` (read again at exit)
    adaptable: tuple[tuple[str, nn.Module], ...] = ()  # layers a tuner could adapt but does not
    memo: dict[Any, Any] | None = None  # records kept with the layout between traces (no tensor, no module)

    @property
    def named(self) -> Named:
        """Every (name, module), paired on demand: only the deep mode and the tests ask (4,000 pairs on a
        large model)."""
        return list(zip(self.names, self.modules, strict=True))

    def lora_params(self) -> list[tuple[str, nn.Parameter]]:
        """(qualified name, parameter) of every LoRA parameter, in discovery order (listed once, at discovery:
        a trace asks for them a dozen times, and walking 320 layers' submodules each time cost ~30 ms)."""
        return list(self.params)

    def all_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the model once (listed at discovery: no walk)."""
        return list(self.every)


def _refuse_zero3(params: tuple[tuple[str, nn.Parameter], ...]) -> None:
    """DeepSpeed ZeRO-3 partitions every parameter (its `ds_id` marks them): between its hooks a parameter
    holds an empty placeholder and `.grad` stays None, the gradient living in DeepSpeed's own partitions.
    Every adapter would look starved: refuse, saying what works instead."""
    partitioned = [name for name, p in params if hasattr(p, "ds_id")]
    if partitioned:
        raise InvalidModelError(
            f"{len(partitioned)} adapter parameters are partitioned by DeepSpeed ZeRO-3 ({partitioned[0]}, ...): "
            "their gradients never reach .grad, so lora-trace cannot tell which arrived. Trace a step with "
            "ZeRO stage 0-2 or without DeepSpeed (a single process is enough: the LoRA path does not depend on "
            "the sharding), or check the adapter after training with `lora-trace inspect ADAPTER`.")


def discover(model: object) -> Discovery:
    """What a trace needs to know about the model now. Its structure is worked out once and kept (layout.py)
    while the model keeps it; adapter state, requires_grad and values are read every time."""
    root = unwrap(model)
    shape = walk(root)
    own_lists = _own_listing(shape)
    if not own_lists:
        kept = kept_layout(root, shape)
        if kept is not None:
            layout, memo = kept
            return _resolve(root, layout, memo, list(map(shape.modules.__getitem__, layout.order)), shape.params)
    named = named_modules(root)
    if own_lists:
        shape = walk(root)  # named_modules() may have re-registered parameters (see below): read them again
    layout, unregistered = _work_out(named, shape)
    whole = len(layout.order) == len(shape.modules) == len(named)  # named_modules() lists what the walk lists
    memo = keep_layout(root, shape, layout) if whole and not own_lists and not unregistered else None
    return _resolve(root, layout, memo, [module for _, module in named], shape.params + unregistered)


def _own_listing(shape: Shape) -> bool:
    """Whether some module overrides named_modules() (its class, or the instance itself): PEFT's
    MultiheadAttention layer re-registers its base weights there, so its model must be listed by
    named_modules() at every trace, and no layout is kept."""
    return (any(cls.named_modules is not nn.Module.named_modules for cls in set(shape.types))
            or any(own_attribute(shape.modules, "named_modules")))


def _work_out(named: Named, shape: Shape) -> tuple[Layout, list[nn.Parameter]]:
    """The layout of a model from its module list, and the adapter parameters no module registers (held in a
    plain dict): they get positions past the model's list, and a layout holding them is never kept."""
    module_at = {id(module): at for at, (_, module) in enumerate(named)}
    walked_at = {id(module): at for at, module in enumerate(shape.modules)}
    order = array("Q", [walked_at[id(module)] for _, module in named if id(module) in walked_at])
    position: dict[int, int] = {}
    for at, param in enumerate(shape.params):
        if param is not None:
            position.setdefault(id(param), at)
    unregistered: list[nn.Parameter] = []

    def position_of(param: nn.Parameter) -> int:
        if id(param) not in position:
            position[id(param)] = len(shape.params) + len(unregistered)
            unregistered.append(param)
        return position[id(param)]

    adapters = adapter_layers(named)
    lora = {name: layer for name, layer in adapters.items() if is_lora_layer(layer)}
    others = {name: layer for name, layer in adapters.items() if name not in lora}
    holders = _holders(lora)
    tuners = adapter_tuners(named)
    below = {prefix: under(named, prefix) for prefix in tuners}
    layout = Layout(
        names=tuple(name for name, _ in named),
        lora=tuple(module_at[id(layer)] for layer in lora.values()),
        sites=site_layouts(lora, position_of),
        regions=tuple((name, module_at[id(module)]) for name, module in region_modules(named, adapters).items()),
        tuners=tuple((prefix, module_at[id(tuner)]) for prefix, tuner in tuners.items()),
        targets=describe_targets(tuners, below),
        unsupported=unsupported_tuners(others, named),
        base=tuple((name, position[id(param)]) for name, param in
                   base_candidates(tuners, below, adapter_parameter_ids(adapters))),
        enclosing=_enclosing(named, lora, module_at),
        holders=tuple(at for at, (name, _) in enumerate(named) if name in holders),
        unique=_in_model_order(shape, order),
        configured=tuple(sorted(module_at[id(shape.modules[at])] for at, _ in shape.configs
                                if id(shape.modules[at]) in module_at)),  # in model order
        order=order,
        adaptable=tuple((f"{prefix}.{name}", module_at[id(module)]) for prefix in tuners
                        for name, module in _adaptable(below[prefix]) if f"{prefix}.{name}" not in lora),
    )
    return layout, unregistered


def _adaptable(below: Named) -> list[tuple[str, nn.Module]]:
    modules = dict(below)
    return [(name, modules[name]) for name in candidate_modules(below)]


def _in_model_order(shape: Shape, order: array) -> tuple[int, ...]:
    """Each registered parameter's first slot, module by module in named_modules() order, as
    named_parameters() lists them (the walk reads them breadth first)."""
    starts = [0, *accumulate(shape.slots[1])]
    seen: set[int] = set()
    unique = []
    for walked in order:
        for at in range(starts[walked], starts[walked + 1]):
            param = shape.params[at]
            if param is not None and id(param) not in seen:
                seen.add(id(param))
                unique.append(at)
    return tuple(unique)


def parents(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`]: every module enclosing the module `name`, the root left out."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _holders(lora: dict[str, nn.Module]) -> set[str]:
    return {""} | set(lora) | {prefix for name in lora for prefix in parents(name)}


def _enclosing(named: Named, lora: dict[str, nn.Module], module_at: dict[int, int]) -> tuple[int, ...]:
    """Modules enclosing an adapter layer whose calls say "the model chose to run this part": a ModuleList or
    ModuleDict (no forward of its own) is never called, and an adapter layer is watched by its own hooks."""
    modules = dict(named)
    names = sorted({prefix for name in lora for prefix in parents(name)} | {""})
    return tuple(module_at[id(modules[name])] for name in names if name in modules and name not in lora
                 and type(modules[name]).forward is not nn.Module.forward)


def _resolve(root: nn.Module, layout: Layout, memo: dict[Any, Any] | None, modules: list[nn.Module],
             params: list[nn.Parameter | None]) -> Discovery:
    """The Discovery of this trace: the layout's positions read in the model's lists (`modules` in
    named_modules() order, `params` the walk's slots), the state read now (`memo`: the state records of the
    last trace of a kept layout)."""
    lora = {layout.names[at]: modules[at] for at in layout.lora}
    owned = tuple((qualified, params[at]) for site in layout.sites for qualified, _, _, at in site.params)
    _refuse_zero3(owned)
    return Discovery(root, layout.names, modules, lora,
                     read_sites(layout.sites, list(lora.values()), params, memo),
                     {name: modules[at] for name, at in layout.regions}, {id(p): name for name, p in owned},
                     {prefix: modules[at] for prefix, at in layout.tuners}, layout.targets, layout.unsupported,
                     trainable_base([(name, params[at]) for name, at in layout.base]), owned,
                     tuple((layout.names[at], modules[at]) for at in layout.enclosing),
                     tuple((layout.names[at], modules[at]) for at in layout.holders),
                     tuple(params[at] for at in layout.unique),
                     tuple((layout.names[at], modules[at]) for at in layout.configured),
                     tuple((name, modules[at]) for name, at in layout.adaptable), memo)
