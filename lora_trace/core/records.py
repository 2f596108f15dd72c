"""Frozen records of one traced step. Torch-free: a run saved on a GPU box loads and diffs anywhere.

Records hold names and plain values, never tensors or modules (they would pin memory).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Phase(str, enum.Enum):
    FORWARD = "forward"
    RECOMPUTE = "recompute"  # an activation-checkpoint re-run during backward: not a second traversal


class CutKind(str, enum.Enum):
    NO_GRAD = "no-grad"
    INFERENCE_MODE = "inference-mode"
    DETACH = "detach"
    DATA = "data"
    ITEM = "item"
    TOLIST = "tolist"
    NUMPY = "numpy"
    DIRECT_WEIGHT = "direct-weight"  # a LoRA layer's base weight used directly, around the wrapper
    CHECKPOINT = "checkpoint"  # a reentrant checkpoint whose inputs do not require grad
    GRAPH_END = "graph-end"  # any other op whose input carries a graph and whose float output carries none


@dataclass(frozen=True, slots=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool
    has_grad_fn: bool


@dataclass(frozen=True, slots=True)
class LoraParam:
    name: str  # qualified parameter name, e.g. "...q_proj.lora_A.default.weight"
    adapter: str
    role: str  # the tuner's container: "lora_A", "lora_B", "lora_magnitude_vector", "hada_w1_a", "oft_R", ...
    numel: int
    requires_grad: bool  # at the start of the traced step
    all_zero: bool | None  # values exactly zero at the start (None where unknown, e.g. meta tensors)
    shard_zero: bool | None = None  # sharded (FSDP2): this rank's shard all zero at the start; the gather
    # combines the ranks' answers into all_zero


@dataclass(frozen=True, slots=True)
class LoraSite:
    """One PEFT LoRA layer: its wrapper module and the adapter state when the trace started."""

    module: str
    region: str
    layer_type: str  # the base layer's class: "Linear", "Conv1d", "Embedding", "MultiheadAttention", ...
    adapters: tuple[str, ...]
    active_adapters: tuple[str, ...]
    merged: bool
    disabled: bool
    scalings: tuple[tuple[str, float], ...]
    params: tuple[LoraParam, ...]
    tuner: str = "LoRA"  # the PEFT tuner of the layer: "LoRA", "LoHa", "LoKr", "OFT", "IA3", "Vera", ...
    shared: tuple[str, ...] = ()  # parameters it uses that another layer holds (listed in that layer's params)

    @property
    def trainable_params(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.requires_grad)


@dataclass(frozen=True, slots=True)
class AdapterState:
    """A LoRA layer's adapter state at one moment: which adapters add a delta, and what stops them."""

    active: tuple[str, ...]  # the layer's active adapters
    disabled: bool
    merged: bool
    zero_scaled: tuple[str, ...] = ()  # active adapters whose scaling is 0

    def contributes(self, adapter: str) -> bool:
        """Whether `adapter` adds its LoRA delta (so its parameters can get a gradient)."""
        return (not self.disabled and not self.merged and adapter in self.active
                and adapter not in self.zero_scaled)


@dataclass(frozen=True, slots=True)
class ModuleCall:
    seq: int  # order within the step
    module: str
    phase: Phase
    grad_enabled: bool
    inference_mode: bool
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    adapter_active: bool | None = None  # LoRA wrappers: some adapter active, unmerged, enabled at the call
    cut: int | None = None  # index into Trace.cuts when the call ran under a disabled grad mode
    state: AdapterState | None = None  # the adapter state when the layer ran (the timeline)
    training: bool | None = None  # the layer's training flag when it ran


@dataclass(frozen=True, slots=True)
class Cut:
    """A place where the gradient path can break, and the LoRA parameters found upstream of it."""

    kind: CutKind
    location: str | None  # "path/to/file.py:LINE" of the user/model code
    stack: tuple[str, ...]  # frames leading there, innermost last
    detail: str
    params: tuple[str, ...] = ()  # LoRA parameters upstream of the cut tensor (or run under it)
    modules: tuple[str, ...] = ()  # LoRA modules concerned
    count: int = 1
    downstream: bool = False  # seen on the path after the LoRA layers (an op on their output), not around them
    how: str = ""  # grad off: "block" | "decorator" | "library" | "call" (set_grad_enabled(False)) | "global" |
    # "unknown" (the source could not be read)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of adapter state made during the step, seen through the torch call that made it (deep mode):
    PEFT's set_adapter / disable_adapter flip `requires_grad`, merging writes the base weights."""

    kind: str  # "requires-grad" (a LoRA parameter's flag set) | "base-write" (a LoRA layer's base weight written)
    location: str | None
    stack: tuple[str, ...]
    modules: tuple[str, ...]  # LoRA layers concerned
    params: tuple[str, ...] = ()  # requires-grad: the LoRA parameters whose flag was set
    value: bool | None = None  # requires-grad: the value set
    order: int = 0  # order of first sighting in the step
    count: int = 1


@dataclass(frozen=True, slots=True)
class GradArrival:
    param: str
    count: int  # how many times a gradient was accumulated (gradient accumulation gives several)
    norm: float | None  # of the accumulated gradient after the last arrival; None where unknown (meta)
    zero: bool | None  # None where unknown: a shard whose values are all zero says nothing about the others
    finite: bool | None
    shard: bool = False  # norm, zero and finite are of this rank's shard (FSDP2); the gather answers for all


@dataclass(frozen=True, slots=True)
class MicroStep:
    """One call of the model and the gradients that arrived after it: a micro-step of an accumulation window."""

    synced: bool | None  # DDP: whether this call's backward all-reduces (False inside `no_sync()`); None: no DDP
    params: tuple[str, ...]  # adapter parameters whose gradient arrived after this call, before the next


@dataclass(frozen=True, slots=True)
class LossInfo:
    source: str  # "backward" | "autograd.grad" | "model-output" | "explicit"
    requires_grad: bool
    has_grad_fn: bool
    shape: tuple[int, ...]
    value: float | None


@dataclass(frozen=True, slots=True)
class Reachability:
    """What the walk of the autograd graph from the loss(es) found."""

    params: tuple[str, ...]  # LoRA parameters whose AccumulateGrad node the walk reached
    nodes: int
    opaque: tuple[str, ...] = ()  # node types the walk cannot see through (reentrant checkpoints)


@dataclass(frozen=True, slots=True)
class GradOrigin:
    """Where an exactly-zero or non-finite gradient was born (a re-run of the dry run's step, read from its graph)."""

    kind: str  # "zero" | "nonfinite" (the backward node) | "forward-nonfinite" (the first op with a non-finite output)
    op: str  # the torch function: "mul", "sqrt", "__truediv__", ...
    location: str | None
    stack: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TrainableBase:
    """Parameters of the adapted models that require grad beside the adapters, at the start of the step."""

    params: int
    values: int
    examples: tuple[str, ...]  # the first few qualified names


@dataclass(frozen=True, slots=True)
class OptimizerInfo:
    params: tuple[str, ...]  # LoRA parameters held by some param group
    lrs: tuple[float | None, ...]  # None: a group without a numeric lr (Adafactor's relative step)
    updated: tuple[str, ...] | None = None  # LoRA parameters whose value changed over the step
    step_lrs: tuple[float | None, ...] | None = None  # each group's lr when optimizer.step() first ran (None: no step)
    initial_lrs: tuple[float | None, ...] = ()  # each group's `initial_lr`, set by a torch lr scheduler
    frozen: int = 0  # parameters in its groups with requires_grad=False (never updated; harmless)
    first_step: bool | None = None  # it held no state before this step and some after: its first step (None:
    # a kind that keeps no state, as SGD without momentum, or no step ran: it cannot tell)
    rounded: tuple[str, ...] = ()  # held, not moved, a gradient arrived: but SGD's step is under half the float
    # spacing of every value (or, in float32/64, the typical one): rounded away (its partner is still near zero)
    coarse: tuple[str, ...] = ()  # held, not moved, a gradient arrived, not proven rounded: but the typical step
    # (about lr for Adam) is under half the float spacing of the median value (bf16/fp16 weights, a small lr)
    no_grad_at_step: tuple[str, ...] = ()  # LoRA parameters whose .grad was None as optimizer.step() first ran
    zero_at_step: tuple[str, ...] = ()  # held, not moved: their .grad was all zero as optimizer.step() began


@dataclass(frozen=True, slots=True)
class RegionCall:
    """One call of a region's root module: nesting, grad mode, and which region calls fed it."""

    seq: int
    region: str
    parent: int | None  # the region call it ran inside
    grad_enabled: bool
    leaf: bool  # no region call ran inside it: what the graph draws
    fed_by: tuple[int, ...] = ()  # seqs of the region calls whose outputs reached its inputs
    inferred: bool = False  # fed_by taken from call order (its input had no autograd graph), not from autograd


@dataclass(frozen=True, slots=True)
class TargetEntry:
    """One target_modules or target_parameters entry of one adapter, and what PEFT's matching selects with it."""

    peft_model: str  # where the tuner's base model sits in the traced model ("" for a bare model)
    adapter: str
    entry: str
    kind: str  # "name" (a list entry) | "regex" (a string) | "all-linear" | "parameter" (target_parameters)
    matched: tuple[str, ...]  # full module names ("parameter": full parameter names)
    note: str | None = None  # why a glob-looking entry matched nothing
    proposal: str | None = None  # a form that PEFT's matching confirms selects modules
    corrected: tuple[str, ...] = ()  # near-miss entries for one that matched nothing, each checked with PEFT's matching
    meant: tuple[str, ...] = ()  # full names of what an entry that matched nothing most likely meant


@dataclass(frozen=True)
class Trace:
    label: str | None
    complete: bool
    deep: bool
    model_class: str
    versions: dict[str, str]
    sites: tuple[LoraSite, ...]
    peft_configs: dict[str, dict[str, dict[str, Any]]]  # prefix of the PeftModel -> adapter -> its config
    calls: tuple[ModuleCall, ...]
    regions_run: tuple[str, ...]  # regions whose root module ran, in first-run order
    cuts: tuple[Cut, ...]
    arrivals: tuple[GradArrival, ...]
    losses: tuple[LossInfo, ...]
    reachability: Reachability | None
    eval_modules: tuple[str, ...]  # modules holding LoRA, or their ancestors, in eval mode at the start
    optimizer: OptimizerInfo | None
    backward: bool = False  # a backward pass was seen (a gradient arrived, or backward()/grad() was called)
    targets: tuple[TargetEntry, ...] = ()
    adaptable_run: tuple[str, ...] | None = None  # deep mode: modules LoRA could adapt that ran with grad on
    target_suggestions: dict[str, str] = field(default_factory=dict)  # tuner prefix -> checked target regex
    optimizer_steps: int = 0  # optimizer.step() calls seen in the block
    scaler_skipped: bool | None = None  # a GradScaler given to the tracer skipped a step (None: no scaler)
    labels_all_ignored: bool | None = None  # every label of the model's `labels` input equals -100
    region_calls: tuple[RegionCall, ...] = ()
    loss_fed_by: tuple[int, ...] = ()  # region calls whose outputs the loss is computed from, nearest first
    error: str | None = None  # the exception type and message when the traced block raised
    micro_steps: tuple[MicroStep, ...] = ()  # one per call of the model (several: gradient accumulation)
    raised_in_backward: bool = False  # it raised inside backward: the gradients that had not arrived yet prove
    # no cut (a collective that timed out under FSDP, an error in a backward hook)
    notes: tuple[str, ...] = field(default_factory=tuple)  # what could not be observed: keys of messages.py
    changes: tuple[StateChange, ...] = ()  # adapter state changed during the step (deep mode sees these)
    trainable_at_end: tuple[str, ...] | None = None  # LoRA parameters with requires_grad when the block ended
    unsupported_tuners: tuple[tuple[str, int], ...] = ()  # (tuner, layers) that get only configuration checks
    enclosing: tuple[str, ...] | None = None  # modules enclosing adapter layers whose calls were watched ("" the model)
    enclosing_called: tuple[str, ...] = ()  # those called at least once in the step
    enclosing_types: tuple[str, ...] = ()  # the class of each `enclosing` module
    trainable_base: TrainableBase | None = None  # base parameters left trainable under the adapters
    origins: tuple[GradOrigin, ...] = ()  # where a zero / non-finite gradient was born (diagnose() only)
