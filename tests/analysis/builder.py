"""Traces built by hand, without torch: a rule test says only what differs from a healthy step.

    trace = build(sites=[site("m.layers.0.q")], calls=[])   # a LoRA layer that never ran
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lora_trace.core.records import (
    Cut,
    GradArrival,
    LoraParam,
    LoraSite,
    LossInfo,
    ModuleCall,
    OptimizerInfo,
    Phase,
    Reachability,
    Trace,
)
from lora_trace.core.regions import region_of


def site(module: str, *, adapter: str = "default", active: tuple[str, ...] = ("default",), merged: bool = False,
         disabled: bool = False, scaling: float = 1.0, trainable: bool = True, b_zero: bool = False) -> LoraSite:
    """A Linear LoRA layer with one adapter: lora_A and lora_B."""
    params = tuple(LoraParam(f"{module}.{role}.{adapter}.weight", adapter, role, 8, trainable,
                             b_zero if role == "lora_B" else False) for role in ("lora_A", "lora_B"))
    return LoraSite(module, region_of(module), "Linear", (adapter,), active, merged, disabled,
                    ((adapter, scaling),), params)


def call(module: str, *, grad: bool = True, seq: int = 0, cut: int | None = None, training: bool = True
         ) -> ModuleCall:
    return ModuleCall(seq, module, Phase.FORWARD, grad, False, (), (), True, cut, training=training)


def arrival(param: str, norm: float = 1.0) -> GradArrival:
    return GradArrival(param, 1, norm, norm == 0.0, norm == norm and abs(norm) != float("inf"))


def build(sites: list[LoraSite], **changes: Any) -> Trace:
    """A healthy step over `sites` (each ran with grad, each trainable parameter got a non-zero gradient,
    one loss with a graph), then `changes` applied to the Trace's fields."""
    trainable = [p.name for s in sites for p in s.params if p.requires_grad]
    healthy = Trace(
        label=None, complete=True, deep=True, model_class="Toy", versions={}, sites=tuple(sites),
        peft_configs={"base_model.model": {"default": {"target_modules": ["q"]}}},
        calls=tuple(call(s.module, seq=i) for i, s in enumerate(sites)),
        regions_run=tuple(dict.fromkeys(s.region for s in sites)), cuts=(),
        arrivals=tuple(arrival(p) for p in trainable),
        losses=(LossInfo("backward", True, True, (), 1.0),),
        reachability=Reachability(tuple(trainable), 10), eval_modules=(), optimizer=None, backward=True,
    )
    return dataclasses.replace(healthy, **changes)


def cut(kind: Any, location: str, params: tuple[str, ...], modules: tuple[str, ...], *,
        downstream: bool = False) -> Cut:
    return Cut(kind, location, (location,), "detail", params, modules, downstream=downstream)


def optimizer(params: list[str], *, lrs: tuple[float, ...] = (1e-3,), updated: list[str] | None = None
              ) -> OptimizerInfo:
    return OptimizerInfo(tuple(params), lrs, tuple(params if updated is None else updated))
