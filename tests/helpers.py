"""Small helpers shared by tests: run a traced step, snapshot every hook on a model."""

from __future__ import annotations

import importlib.util
import pathlib

import lora_trace
from lora_trace.scenarios import Scenario

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """An example script as a module, so a test runs its functions as written."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def traced_step(scenario: Scenario, *, deep: bool = False, optimizer_step: bool = False):
    """Trace one real step (forward, backward, optionally optimizer.step) and return the tracer."""
    with lora_trace.trace(scenario.model, optimizer=scenario.optimizer, deep=deep) as tracer:
        loss = scenario.step(scenario.model)
        if loss.requires_grad:
            loss.backward()
        if optimizer_step and scenario.optimizer is not None:
            scenario.optimizer.step()
    return tracer


def hook_snapshot(model) -> dict:
    """Every hook table of every module and parameter: equal before and after a trace, or a hook leaked."""
    tables = {}
    for name, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
            tables[(name, attr)] = tuple(getattr(module, attr, {}).keys())
    for name, param in model.named_parameters():
        tables[(name, "tensor")] = (
            tuple((param._backward_hooks or {}).keys()),
            param._post_accumulate_grad_hooks is not None and len(param._post_accumulate_grad_hooks) > 0,
        )
    return tables
