"""The typed seam between the hooks and the builder: one `Recording` per traced step.

The hooks (hooks.py) write into it while the step runs; `build.build_trace` reads it when the block ends.
Nothing else crosses from capture to the Trace: no tracer attribute, no dict of dicts.
Tensors and autograd nodes held here are dropped by `release()` as soon as the Trace is built.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import torch

from ..core.records import CutKind, LossInfo, ModuleCall
from .discovery import Discovery
from .locate import GradOffSite, Site
from .losses import describe_loss, loss_value
from .regionflow import RegionFlow
from .watch import CutCandidate


@dataclass(slots=True)
class GradOffPlace:
    """One place (a `with torch.no_grad():`, a reentrant checkpoint) where LoRA layers ran with grad off."""

    kind: CutKind
    site: GradOffSite
    index: int  # order of first sighting: the index of its Cut in the Trace
    modules: dict[str, None] = field(default_factory=dict)  # LoRA modules that ran there, in order


@dataclass(slots=True)
class GradCounter:
    """Gradient arrivals of one LoRA parameter: how many, and the norm after the last (a 0-d device tensor)."""

    count: int = 0
    norm: torch.Tensor | None = None
    shard: bool = False  # the norm is of this rank's shard only (FSDP2 / DTensor)


@dataclass(slots=True)
class ChangeSeen:
    """State changes of one kind at one source line (deep mode): which LoRA layers and parameters."""

    kind: str
    site: Site
    order: int
    modules: dict[str, None] = field(default_factory=dict)
    params: dict[str, None] = field(default_factory=dict)
    value: bool | None = None
    count: int = 0


@dataclass(slots=True)
class LossSeen:
    """A tensor the step treated as its loss, its autograd node (None without a graph) and what it was."""

    node: Any
    info: LossInfo  # its value is read when the block ends, from `value`
    value: torch.Tensor | None = None  # the loss's value, a copy on its device: no synchronisation in a hook


def loss_seen(tensor: torch.Tensor, source: str) -> LossSeen:
    return LossSeen(tensor.grad_fn, describe_loss(tensor, source, read=False), loss_value(tensor))


@dataclass(slots=True)
class OptimizerStart:
    """What held before the step: LoRA values the optimizer may change; the `.grad` (weakly) and its version of
    every parameter the optimizer holds or that is trainable."""

    values: dict[str, torch.Tensor]
    grads: list[tuple[torch.Tensor, weakref.ref | None, int]]
    scale: float | None  # a GradScaler's scale at the start (None without one)
    frozen: list[tuple[str, torch.Tensor, torch.Tensor | None, int]] = field(default_factory=list)
    # LoRA parameters frozen at the start (no gradient hook can be registered on them): name, param, its
    # .grad and that grad's version, so a gradient that reaches them after the step unfreezes them is seen
    stateless: bool | None = None  # the optimizer held no state at the start (None: no optimizer, or no state
    # table to read): a stateful one that then holds some has taken its first step
    versions: dict[str, int] = field(default_factory=dict)  # each LoRA parameter's version counter: a value
    # read at the end is the start's while nothing wrote it in place


@dataclass(slots=True)
class Recording:
    """Everything observed in one traced step."""

    found: Discovery
    deep: bool
    label: str | None
    compiled: bool
    optimizer: Any  # the torch optimizer (wrappers removed), or None
    scaler: Any
    eval_modules: tuple[str, ...]
    start: OptimizerStart
    calls: list[ModuleCall] = field(default_factory=list)
    grad_off: dict[tuple[CutKind, str | None], GradOffPlace] = field(default_factory=dict)
    losses: list[LossSeen] = field(default_factory=list)  # backward() / autograd.grad() roots (deep mode)
    model_outputs: list[LossSeen] = field(default_factory=list)  # loss-like outputs of the model
    grads: dict[str, GradCounter] = field(default_factory=dict)  # accumulated into .grad (backward())
    incoming: dict[str, GradCounter] = field(default_factory=dict)  # computed for it (also autograd.grad(),
    # which accumulates nothing: then the norm of the last one, taken as it arrived)
    backward_seen: bool = False
    micro_steps: list[tuple[bool | None, dict[str, None]]] = field(default_factory=list)  # per model call:
    # DDP's sync flag, the adapter parameters whose gradient arrived after it
    sync_flag: Any = None  # () -> DDP's require_backward_grad_sync of the wrapper traced, or None
    labels_ignored: list[torch.Tensor] = field(default_factory=list)  # per model call with integer `labels`:
    # whether every label is -100 (a 0-d bool on the labels' device, read when the block ends)
    optimizer_steps: int = 0
    adaptable_run: dict[str, None] | None = None  # deep mode: adaptable modules that ran with grad on
    flow: RegionFlow = field(default_factory=RegionFlow)
    candidates: dict[Any, CutCandidate] = field(default_factory=dict)  # the deep mode's cut candidates
    open_wrappers: list[str] = field(default_factory=list)  # LoRA wrappers whose forward is running
    changes: dict[tuple[str, str | None, bool | None], ChangeSeen] = field(default_factory=dict)
    enclosing: tuple[str, ...] = ()  # modules enclosing adapter layers whose calls are watched (one-shot hooks)
    enclosing_types: tuple[str, ...] = ()  # their classes
    enclosing_called: dict[str, None] = field(default_factory=dict)  # those called at least once
    step_lrs: tuple[float | None, ...] | None = None  # each group's lr when optimizer.step() first ran
    initial_lrs: tuple[float | None, ...] = ()
    grads_at_step: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)  # as optimizer.step() first
    # ran: each held LoRA parameter's .grad and its version, for what the update used after a zero_grad() in the
    # block (unscaled by then under a GradScaler; all zero after clip_grad_norm_(max_norm=0))
    no_grad_at_step: tuple[str, ...] | None = None  # LoRA parameters whose .grad was None as optimizer.step()
    # first ran after a backward (None: no such step): a gradient that arrived and was cleared before the update

    def backward_ran(self) -> bool:
        """A gradient arrived, backward()/grad() was seen, or some trainable parameter's .grad changed (a loss
        computed outside the model, whose backward reached no LoRA layer, still reaches a trainable head). A .grad
        set to None is a zero_grad(), not a backward, whether or not its old tensor is still alive elsewhere."""
        if self.backward_seen:
            return True
        return any(p.grad is not None and (p.grad is not (grad() if grad is not None else None)
                                           or p.grad._version != version) for p, grad, version in self.start.grads)

    def release(self) -> None:
        """Drop tensors and autograd nodes: what only building the trace needed."""
        self.flow = RegionFlow()
        self.grads = {}
        self.incoming = {}
        self.model_outputs = []
        self.candidates = {}
        self.start = OptimizerStart({}, [], self.start.scale)
        self.losses = [LossSeen(None, seen.info) for seen in self.losses]
        self.labels_ignored = []
        self.grads_at_step = {}


WIDE_FLOATS = frozenset({torch.float32, torch.float64})  # a norm summed in their own precision


def group_rate(group: dict, key: str = "lr") -> float | None:
    """A param group's rate as a number: None where it has none (transformers' Adafactor with relative_step
    computes its own) or holds something that is not one. Read inside the user's optimizer.step(): never raises."""
    value = group.get(key)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (reading a whole DTensor would run a collective), or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def grad_norm(grad: torch.Tensor) -> torch.Tensor:
    """A gradient's L2 norm, summed in float32 or wider: narrower floats (fp16, bf16, float8) are widened,
    float64 and complex keep their precision. Every path that measures a gradient uses it, so a tiny one reads
    the same (zero or not) whichever hook saw it. Call under no_grad."""
    if grad.dtype in WIDE_FLOATS or grad.is_complex():
        return torch.linalg.vector_norm(grad)
    if grad.dtype in (torch.float16, torch.bfloat16):
        return torch.linalg.vector_norm(grad, dtype=torch.float32)
    return torch.linalg.vector_norm(grad.float())  # float8 and others: no promotion inside the norm


def optimizer_start(found: Discovery, optimizer: Any, scaler: Any) -> OptimizerStart:
    """Values of the LoRA parameters the optimizer holds (to tell which it changed) and every `.grad`."""
    scale = scaler.get_scale() if scaler is not None else None
    params = [p for group in optimizer.param_groups for p in group["params"]] if optimizer is not None else []
    held = {id(p) for p in params}
    params += [p for p in found.all_parameters() if p.requires_grad and id(p) not in held]
    values = {}
    if optimizer is not None:
        with torch.no_grad():
            values = {name: p.detach().clone() for name, p in found.lora_params() if id(p) in held
                      and p.device.type != "meta"}
    # Weak references: holding the old .grad would keep its memory alive after zero_grad(set_to_none=True).
    grads = [(p, weakref.ref(p.grad) if p.grad is not None else None, p.grad._version if p.grad is not None else -1)
             for p in params]
    lora = found.lora_params()
    versions = dict(zip([name for name, _ in lora], map(_VERSION, [p for _, p in lora]), strict=True))
    return OptimizerStart(values, grads, scale, frozen_lora(found), holds_no_state(optimizer), versions)


def adopted_start(start: OptimizerStart, found: Discovery, optimizer: Any) -> OptimizerStart:
    """The start record once an optimizer is known mid-step, before its update: the LoRA values it holds are
    still those of the start; every other record (the .grad baselines) is kept from the real start."""
    with torch.no_grad():
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        values = {name: p.detach().clone() for name, p in found.lora_params() if id(p) in held
                  and p.device.type != "meta"}
    known = {id(p) for p, _, _ in start.grads}
    grads = start.grads + [(p, weakref.ref(p.grad) if p.grad is not None else None,
                            p.grad._version if p.grad is not None else -1)
                           for group in optimizer.param_groups for p in group["params"] if id(p) not in known]
    return OptimizerStart(values, grads, start.scale, start.frozen, holds_no_state(optimizer), start.versions)


_VERSION = attrgetter("_version")


def holds_no_state(optimizer: Any) -> bool | None:
    """Whether the optimizer's state table holds nothing (Adam's moments, SGD's momentum appear at its first
    step; an entry left empty by a read of the defaultdict is nothing); None without an optimizer or a table."""
    state = getattr(optimizer, "state", None)
    return None if not isinstance(state, Mapping) else not any(map(bool, state.values()))


def frozen_lora(found: Discovery) -> list[tuple[str, torch.Tensor, torch.Tensor | None, int]]:
    return [(name, p, p.grad, p.grad._version if p.grad is not None else -1) for name, p in found.lora_params()
            if not p.requires_grad]
