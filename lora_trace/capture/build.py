"""Turn the Recording of a traced step into a frozen, torch-free Trace (runs once, when the block ends)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import math
import traceback
from collections.abc import Callable

import torch

from ..core.records import (
    Cut,
    CutKind,
    GradArrival,
    LoraSite,
    MicroStep,
    OptimizerInfo,
    Reachability,
    StateChange,
    Trace,
)
from .autograd import walk
from .discovery import Discovery
from .losses import describe_loss
from .peft import peft_configs, zeros_at_start
from .recording import GradCounter, Recording, grad_norm, group_rate, holds_no_state, local_shard
from .rounding import rounded_away, zero_at_step


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


def build_trace(rec: Recording, *, complete: bool, error: BaseException | None) -> Trace:
    found = rec.found
    notes: list[str] = []  # keys of the message catalogue, rendered in the report's language
    losses = rec.losses or rec.model_outputs
    roots = [seen.node for seen in losses if seen.node is not None]
    backward = rec.backward_ran()
    # The walk answers "which LoRA would get a gradient" only when no backward ran: after one, the arrivals
    # do. Walking a graph also makes PyTorch free it recursively later (each node visited from Python is
    # then released through its Python object), which overflowed the C stack at 10,000 chained LoRA layers.
    reachability = walk(roots, found.param_names) if losses and not backward else None
    if not losses and not backward and complete:  # after a backward, the gradients that arrived are the evidence
        notes.append("note.no-loss")
    grads = _late_gradients(rec) | _computed_only(rec) | rec.grads
    names = sorted(grads)
    scalars = read_scalars([grads[name].norm for name in names] + [seen.value for seen in losses] + rec.labels_ignored)
    labels = scalars[len(names) + len(losses):]
    arrivals = _arrivals(grads, names, scalars[:len(names)])
    if any(a.norm is None for a in arrivals):
        notes.append("note.meta")
    region_calls, loss_fed_by = rec.flow.records(roots)
    cuts = _grad_off_cuts(rec) + _watch_cuts(rec)
    if not rec.deep:
        notes.append("note.default-mode")
    if rec.compiled:
        notes.append("note.compiled")
    return Trace(
        label=rec.label,
        complete=complete,
        deep=rec.deep,
        model_class=type(found.root).__name__,
        versions=versions(),
        sites=_zeros_where_asked(rec, arrivals),
        unsupported_tuners=found.unsupported,
        enclosing=rec.enclosing,
        enclosing_called=tuple(rec.enclosing_called),
        enclosing_types=rec.enclosing_types,
        trainable_base=found.trainable_base,
        peft_configs=peft_configs(found.configured),
        calls=tuple(rec.calls),
        regions_run=rec.flow.regions_in_order(),
        cuts=tuple(cuts),
        arrivals=arrivals,
        losses=tuple(seen.info if seen.value is None else dataclasses.replace(seen.info, value=value)
                     for seen, value in zip(losses, scalars[len(names):len(names) + len(losses)], strict=True)),
        reachability=reachability,
        eval_modules=rec.eval_modules,
        optimizer=_optimizer_info(rec, arrivals),
        backward=backward,
        targets=found.targets,
        adaptable_run=None if rec.adaptable_run is None else tuple(rec.adaptable_run),
        target_suggestions=_target_suggestions(rec),
        optimizer_steps=rec.optimizer_steps,
        scaler_skipped=_scaler_skipped(rec),
        region_calls=region_calls,
        loss_fed_by=loss_fed_by,
        labels_all_ignored=any(labels) if labels else None,
        error=f"{type(error).__name__}: {error}" if error is not None else None,
        raised_in_backward=error is not None and _inside_backward(error),
        micro_steps=tuple(MicroStep(synced, tuple(sorted(params))) for synced, params in rec.micro_steps),
        notes=tuple(notes),
        changes=_changes(rec),
        trainable_at_end=tuple(name for name, p in found.lora_params() if p.requires_grad),
    )


def _zeros_where_asked(rec: Recording, arrivals: tuple[GradArrival, ...]) -> tuple[LoraSite, ...]:
    """Whether a factor is all zero is evidence only beside a gradient that arrived exactly zero (lora_A's
    while lora_B is still zero: zero-grad-at-init; else grad-zero): read for every factor of the layers holding
    or sharing such a parameter, from its value at the start (the optimizer's start copy, or the parameter
    itself while its version counter says nothing wrote it in place)."""
    zero = {a.param for a in arrivals if a.zero}
    sites = rec.found.sites
    if not zero:
        return sites
    adapter_of = {p.name: p.adapter for site in sites for p in site.params}
    asked: set[str] = set()
    for site in sites:  # the other factors of each adapter with a zero gradient (all, if two are zero)
        groups: dict[str | None, list[str]] = {}
        for name in (*(p.name for p in site.params), *site.shared):
            groups.setdefault(adapter_of.get(name), []).append(name)
        for group in groups.values():
            hit = zero.intersection(group)
            if hit:
                asked.update(group if len(hit) > 1 else (n for n in group if n not in hit))
    params, start = dict(rec.found.lora_params()), rec.start

    def at_start(name: str) -> torch.Tensor | None:
        kept, param = start.values.get(name), params.get(name)
        if kept is not None:
            return kept
        return param if param is not None and start.versions.get(name) == param._version else None

    return zeros_at_start(sites, asked, at_start, rec.found.memo)


def _late_gradients(rec: Recording) -> dict[str, GradCounter]:
    """Gradients of LoRA parameters frozen at the start and unfrozen by the step (no hook could see them)."""
    late = {}
    for name, param, grad, version in rec.start.frozen:
        now = param.grad
        if now is None or (now is grad and now._version == version):
            continue
        local = local_shard(now)
        with torch.no_grad():
            late[name] = GradCounter(1, grad_norm(local.detach()), local is not now)
    return late


def _computed_only(rec: Recording) -> dict[str, GradCounter]:
    """Gradients computed for LoRA parameters but never accumulated (torch.autograd.grad users): their
    norms were taken as they arrived (None where none could be: the arrival still counts)."""
    return {name: seen for name, seen in rec.incoming.items() if name not in rec.grads}


def _changes(rec: Recording) -> tuple[StateChange, ...]:
    return tuple(StateChange(seen.kind, seen.site.location, seen.site.stack, tuple(seen.modules),
                             tuple(seen.params), seen.value, seen.order, seen.count)
                 for seen in sorted(rec.changes.values(), key=lambda s: s.order))


def moved(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
          on_host: Callable[[torch.Tensor], bool] = lambda tensor: tensor.device.type == "cpu") -> tuple[str, ...]:
    """The names whose value before and after differ (NaN differs from itself, as torch.equal has it). On the
    CPU torch.equal answers each at once; on a device each answer would be a synchronisation, so the
    differences are kept as 0-d flags and read together (one synchronisation per device)."""
    names, flags, changed = [], [], []
    for name, (before, after) in pairs.items():
        before, after = local_shard(before), local_shard(after)
        if on_host(before):
            if not torch.equal(before, after):
                changed.append(name)
        else:
            names.append(name)
            flags.append(torch.ne(before, after).any() if before.shape == after.shape else None)
    changed += [name for name, flag in zip(names, read_scalars(flags), strict=True) if flag != 0.0]
    return tuple(sorted(changed))


def read_scalars(tensors: list[torch.Tensor | None]) -> list[float | None]:
    """0-d tensors as numbers (None where unknown: none, or meta): one synchronisation per device for all the
    gradient norms, loss values and label checks a step kept on its devices."""
    values: list[float | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for at, tensor in enumerate(tensors):
        if tensor is not None and tensor.device.type != "meta":
            by_device.setdefault(tensor.device, []).append(at)
    for group in by_device.values():
        for at, value in zip(group, torch.stack([tensors[at] for at in group]).tolist(), strict=True):
            values[at] = float(value)
    return values


def _arrivals(grads: dict[str, GradCounter], names: list[str], norms: list[float | None]) -> tuple[GradArrival, ...]:
    """`norms`: the norms read, in the order of `names`."""
    values = dict(zip(names, norms, strict=True))
    arrivals = []
    for name in names:
        value, shard = values[name], grads[name].shard
        zero = None if value is None else value == 0.0
        finite = None if value is None else math.isfinite(value)
        if shard:  # one shard tells only what it holds: a non-zero or non-finite value is certain, the rest
            zero = False if zero is False else None  # is for the explicit gather to answer across ranks
            finite = False if finite is False else None
        arrivals.append(GradArrival(name, grads[name].count, value, zero, finite, shard))
    return tuple(arrivals)


def _trainable(found: Discovery, modules: list[str]) -> tuple[str, ...]:
    by_module = {site.module: site for site in found.sites}
    return tuple(p for m in modules for p in by_module[m].trainable_params)


def _grad_off_cuts(rec: Recording) -> list[Cut]:
    cuts = []
    for place in sorted(rec.grad_off.values(), key=lambda p: p.index):
        modules = list(place.modules)
        detail = "LoRA layers ran with grad disabled"
        if place.kind is CutKind.CHECKPOINT:
            detail = ("reentrant checkpoint forward; tensor inputs requires_grad="
                      f"{list(place.site.checkpoint_inputs or ())}")
        cuts.append(Cut(place.kind, place.site.location, place.site.stack, detail, _trainable(rec.found, modules),
                        tuple(modules), how=getattr(place.site, "how", "")))
    return cuts


def _watch_cuts(rec: Recording) -> list[Cut]:
    found = rec.found
    module_of = {p.name: site.module for site in found.sites for p in site.params}
    cuts = []
    for candidate in rec.candidates.values():
        if candidate.kind is CutKind.DIRECT_WEIGHT:
            params = _trainable(found, sorted(candidate.modules))
        else:
            params = walk(candidate.nodes, found.param_names).params
        if not params:
            continue  # cuts nothing that holds LoRA: a log line's .item(), a frozen reference model
        modules = sorted(candidate.modules) or sorted({module_of[p] for p in params})
        cuts.append(Cut(candidate.kind, candidate.site.location, candidate.site.stack, candidate.detail,
                        tuple(params), tuple(modules), candidate.count, downstream=True))
    return cuts


def _optimizer_info(rec: Recording, arrivals: tuple[GradArrival, ...]) -> OptimizerInfo | None:
    optimizer, found = rec.optimizer, rec.found
    if optimizer is None:
        return None
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = tuple(sorted(name for key, name in found.param_names.items() if key in held))
    updated, rounded, coarse, zeroed = None, (), (), ()
    if rec.start.values:
        current = dict(found.lora_params())
        with torch.no_grad():
            updated = moved({n: (before, current[n].detach()) for n, before in rec.start.values.items()})
            still = set(rec.start.values) - set(updated)
            zeroed = zero_at_step(rec, still)
            rounded, coarse = rounded_away(rec, still - set(zeroed), arrivals)
    frozen = sum(1 for group in optimizer.param_groups for p in group["params"] if not p.requires_grad)
    first = None  # its first step: no state at the start, some after a step (a stateless kind cannot tell)
    if rec.start.stateless is False:
        first = False
    elif rec.start.stateless and rec.optimizer_steps and holds_no_state(optimizer) is False:
        first = True
    return OptimizerInfo(params, tuple(group_rate(g) for g in optimizer.param_groups), updated,
                         rec.step_lrs, rec.initial_lrs, frozen, first_step=first, rounded=rounded, coarse=coarse,
                         no_grad_at_step=rec.no_grad_at_step or (), zero_at_step=zeroed)


def _inside_backward(error: BaseException) -> bool:
    """Whether the exception came out of autograd's engine (backward() or autograd.grad() was running)."""
    return any(frame.name == "_engine_run_backward" for frame in traceback.extract_tb(error.__traceback__))


def _scaler_skipped(rec: Recording) -> bool | None:
    """A GradScaler lowers its scale exactly when it found inf/NaN and skipped optimizer.step()."""
    if rec.scaler is None or rec.start.scale is None:
        return None
    return bool(rec.scaler.get_scale() < rec.start.scale)


def _target_suggestions(rec: Recording) -> dict[str, str]:
    """For each PEFT model with LoRA that never ran: a target regex selecting the linear layers that did."""
    if rec.adaptable_run is None:
        return {}
    from .matching import suggest_target_modules

    found = rec.found
    called = {call.module for call in rec.calls if call.grad_enabled}
    ran_names = set(rec.adaptable_run) | called
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
