"""Turn what a tracer recorded into a frozen, torch-free Trace (runs once, when the block ends)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from typing import Any

import torch

from ..core.records import Cut, CutKind, GradArrival, OptimizerInfo, Reachability, Trace
from .autograd import walk
from .discovery import peft_configs
from .losses import describe_loss


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    return tuple(versions_now().items())


def versions() -> dict[str, str]:
    """The versions a run records (looked up once per process: importlib.metadata is slow)."""
    return dict(_versions())


def versions_now() -> dict[str, str]:
    found = {}
    for package in ("lora-trace", "torch", "transformers", "peft"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def build_trace(tracer: Any, *, complete: bool, error: BaseException | None) -> Trace:
    found = tracer._found
    notes: list[str] = []  # keys of lora_trace.core.messages, rendered in the report's language
    losses = tracer._losses or tracer._model_outputs
    roots = [node for node, _ in losses if node is not None]
    reachability = walk(roots, found.param_names) if losses else None  # no grad_fn: nothing reachable
    if not losses:
        notes.append("note.no-loss")
    arrivals = _arrivals(tracer._norms)
    if any(a.norm is None for a in arrivals):
        notes.append("note.meta")
    region_calls, loss_fed_by = tracer._flow.records(roots)
    cuts = _grad_off_cuts(tracer, found) + (_watch_cuts(tracer._watch, found) if tracer._watch else [])
    if not tracer._deep:
        notes.append("note.default-mode")
    if tracer._compiled:
        notes.append("note.compiled")
    return Trace(
        label=tracer._label,
        complete=complete,
        deep=tracer._deep,
        model_class=type(found.root).__name__,
        versions=versions(),
        sites=found.sites,
        peft_configs=peft_configs(found.named),
        calls=tuple(tracer._calls),
        regions_run=tracer._flow.regions_in_order(),
        cuts=tuple(cuts),
        arrivals=arrivals,
        losses=tuple(info for _, info in losses),
        reachability=reachability,
        eval_modules=tracer._eval_modules,
        optimizer=_optimizer_info(tracer, found),
        backward=tracer.backward_ran(),
        targets=found.targets,
        adaptable_run=None if tracer._adaptable_run is None else tuple(tracer._adaptable_run),
        target_suggestions=_target_suggestions(tracer, found),
        optimizer_steps=tracer._optimizer_steps,
        scaler_skipped=_scaler_skipped(tracer),
        region_calls=region_calls,
        loss_fed_by=loss_fed_by,
        labels_all_ignored=tracer._labels_all_ignored,
        error=f"{type(error).__name__}: {error}" if error is not None else None,
        notes=tuple(notes),
    )


def _arrivals(norms: dict[str, list[Any]]) -> tuple[GradArrival, ...]:
    names = sorted(norms)
    values: dict[str, float | None] = dict.fromkeys(names)
    by_device: dict[torch.device, list[str]] = {}
    for name in names:
        norm = norms[name][1]
        if norm is not None and norm.device.type != "meta":
            by_device.setdefault(norm.device, []).append(name)
    for group in by_device.values():  # one synchronisation per device, not one per parameter
        for name, value in zip(group, torch.stack([norms[n][1] for n in group]).tolist(), strict=True):
            values[name] = float(value)
    arrivals = []
    for name in names:
        value = values[name]
        finite = None if value is None else value == value and value not in (float("inf"), float("-inf"))
        arrivals.append(GradArrival(name, norms[name][0], value, None if value is None else value == 0.0, finite))
    return tuple(arrivals)


def _trainable(found: Any, modules: list[str]) -> tuple[str, ...]:
    by_module = {site.module: site for site in found.sites}
    return tuple(p for m in modules for p in by_module[m].trainable_params)


def _grad_off_cuts(tracer: Any, found: Any) -> list[Cut]:
    cuts = []
    for (kind, location), entry in sorted(tracer._grad_off.items(), key=lambda item: item[1]["index"]):
        modules = list(entry["modules"])
        detail = "LoRA layers ran with grad disabled"
        if kind is CutKind.CHECKPOINT:
            detail = f"reentrant checkpoint forward; tensor inputs requires_grad={list(entry.get('inputs', ()))}"
        cuts.append(Cut(kind, location, entry["site"].stack, detail, _trainable(found, modules), tuple(modules)))
    return cuts


def _watch_cuts(watch: Any, found: Any) -> list[Cut]:
    cuts = []
    for candidate in watch.candidates.values():
        if candidate.kind is CutKind.DIRECT_WEIGHT:
            params = _trainable(found, sorted(candidate.modules))
        else:
            params = walk(candidate.nodes, found.param_names).params
        if not params:
            continue  # cuts nothing that holds LoRA: a log line's .item(), a frozen reference model
        modules = sorted(candidate.modules) or sorted({p.rsplit(".lora_", 1)[0] for p in params})
        cuts.append(Cut(candidate.kind, candidate.site.location, candidate.site.stack, candidate.detail,
                        tuple(params), tuple(modules), candidate.count, downstream=True))
    return cuts


def _optimizer_info(tracer: Any, found: Any) -> OptimizerInfo | None:
    optimizer = tracer._optimizer
    if optimizer is None:
        return None
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = tuple(sorted(name for key, name in found.param_names.items() if key in held))
    updated = None
    if tracer._before_step:
        by_id = {id(p): p for layer in found.lora.values() for p in layer.parameters()}
        current = {name: by_id[key] for key, name in found.param_names.items() if key in held}
        with torch.no_grad():
            updated = tuple(sorted(n for n, before in tracer._before_step.items()
                                   if not torch.equal(before, current[n].detach())))
    return OptimizerInfo(params, tuple(float(g.get("lr", 0.0)) for g in optimizer.param_groups), updated)


def _scaler_skipped(tracer: Any) -> bool | None:
    """A GradScaler lowers its scale exactly when it found inf/NaN and skipped optimizer.step()."""
    if tracer._scaler is None or tracer._scale_at_start is None:
        return None
    return bool(tracer._scaler.get_scale() < tracer._scale_at_start)


def _target_suggestions(tracer: Any, found: Any) -> dict[str, str]:
    """For each PEFT model with LoRA that never ran: a target regex selecting the linear layers that did."""
    if tracer._adaptable_run is None:
        return {}
    from ..fixes import suggest_target_modules

    called = {call.module for call in tracer._calls if call.grad_enabled}
    ran_names = set(tracer._adaptable_run) | called
    suggestions = {}
    for prefix, tuner in found.tuners.items():
        held = [site.module for site in found.sites if site.module.startswith(prefix + ".")]
        if not held or all(m in called for m in held):
            continue
        relative = [n[len(prefix) + 1:] for n in ran_names if n.startswith(prefix + ".")]
        config = next(iter(tuner.peft_config.values()))
        regex = suggest_target_modules(tuner.model, relative, config=config)
        if regex:
            suggestions[prefix] = regex
    return suggestions


def with_explicit_loss(trace: Trace, loss: torch.Tensor, param_names: dict[int, str]) -> Trace:
    reach: Reachability = walk([loss.grad_fn], param_names) if loss.grad_fn is not None else Reachability((), 0)
    return dataclasses.replace(trace, losses=(describe_loss(loss, "explicit"),), reachability=reach)
