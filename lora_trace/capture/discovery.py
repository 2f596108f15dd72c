"""Find what there is to trace: unwrap DDP / torch.compile, find PEFT LoRA layers and regions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import InvalidModelError
from ..core.records import LoraSite, TargetEntry, TrainableBase
from ..core.regions import region_of
from .peft import (
    Named,
    adapter_parameter_ids,
    adapter_tuners,
    describe_sites,
    describe_targets,
    is_adapter_layer,
    is_lora_layer,
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
    named: Named  # every (name, module), walked once
    lora: dict[str, nn.Module]
    sites: tuple[LoraSite, ...]
    regions: dict[str, nn.Module]
    param_names: dict[int, str]  # id(LoRA parameter) -> qualified name
    tuners: dict[str, nn.Module]  # base-model prefix -> PEFT tuner
    targets: tuple[TargetEntry, ...]
    unsupported: tuple[tuple[str, int], ...] = ()  # (tuner, layers) lora-trace only checks the configuration of
    trainable_base: TrainableBase | None = None  # base parameters left trainable beside the adapters

    params: tuple[tuple[str, nn.Parameter], ...] = ()  # (qualified name, LoRA parameter), in discovery order

    def lora_params(self) -> list[tuple[str, nn.Parameter]]:
        """(qualified name, parameter) of every LoRA parameter, in discovery order (listed once, at discovery:
        a trace asks for them a dozen times, and walking 320 layers' submodules each time cost ~30 ms)."""
        return list(self.params)

    def all_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the model once, from the module list already walked (no recursive walk)."""
        seen: dict[int, nn.Parameter] = {}
        for _, module in self.named:
            for param in module._parameters.values():
                if param is not None:
                    seen.setdefault(id(param), param)
        return list(seen.values())


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
    root = unwrap(model)
    named = named_modules(root)
    adapters = adapter_layers(named)
    lora = {name: layer for name, layer in adapters.items() if is_lora_layer(layer)}
    others = {name: layer for name, layer in adapters.items() if name not in lora}
    sites, param_names, params = describe_sites(lora)
    tuners = adapter_tuners(named)
    adapter_ids = set(param_names) | adapter_parameter_ids(others)
    below = {prefix: under(named, prefix) for prefix in tuners}
    _refuse_zero3(params)
    return Discovery(root, named, lora, sites, region_modules(named, adapters), param_names, tuners,
                     describe_targets(tuners, below), unsupported_tuners(others, named),
                     trainable_base(tuners, below, adapter_ids), params)
