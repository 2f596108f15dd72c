"""The gradient evidence of a traced step: which LoRA parameters got a gradient, how many times, and its norm.

One tensor hook per trainable LoRA parameter sees each gradient computed for it. Under backward() autograd
accumulates it into .grad right after the hook, and the norms of every .grad filled are read once, when that
backward ends (a callback queued on autograd's engine, as DDP's finalisation is). torch.autograd.grad() fills
no .grad: its norm is taken in the hook. FSDP2's sharded parameters get post-accumulate hooks instead: FSDP2
sets their .grad itself and runs those hooks. No hook raises into the user's backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .recording import WIDE_FLOATS, GradCounter, Recording, grad_norm, local_shard


def will_accumulate(param: torch.Tensor) -> bool:
    """Whether the backward running now writes `param`'s gradient into .grad. The engine refuses to answer
    for a leaf that torch.autograd.grad() captures: that refusal is the answer "no". A torch that cannot be
    asked gets "no" too: the norm is then taken in the hook, which is right either way (one op more)."""
    try:
        from torch.autograd.graph import _get_grad_fn_or_grad_acc

        return bool(torch._C._will_engine_execute_node(_get_grad_fn_or_grad_acc(param)))
    except Exception:  # noqa: BLE001 - also a parameter frozen mid-backward (AssertionError): never the user's
        return False


_GRAPH_TASK = getattr(torch._C, "_current_graph_task_id", None)  # which backward pass is running


foreach_norm = torch._foreach_norm  # one call for many gradients of a device


def _queue_at_backward_end(callback: Callable[[], None]) -> bool:
    """Run `callback` when the running backward ends (after every accumulation, as DDP's own finalisation
    does); False where the engine cannot queue one: the caller then treats this backward as not filling
    .grad and takes each norm as the gradient arrives."""
    try:
        torch.autograd.Variable._execution_engine.queue_callback(callback)
        return True
    except Exception:  # noqa: BLE001 - no callback: the gradient's own norm is still the evidence
        return False


class GradientHooks:
    """The gradient hooks of one traced step; `paused` hides our own tensor calls from the deep mode's watch,
    `watched` says whether that watch is on."""

    def __init__(self, rec: Recording, keep: Callable[[RemovableHandle], None],
                 paused: Callable[[], contextlib.AbstractContextManager[Any]], watched: Callable[[], bool]) -> None:
        self.rec = rec
        self._keep = keep
        self.paused = paused
        self._watched = watched
        self._accumulating: dict[int, bool] = {}  # graph task id -> whether its backward fills .grad
        # gradients about to be accumulated, with .grad and its version before: counted where .grad changed
        self._pending: list[tuple[str, nn.Parameter, torch.Tensor | None, int]] = []
        self._sharded: set[int] = set()  # DTensor parameters: their accumulations come by post-accumulate hooks

    def install(self) -> None:
        for name, param in self.rec.found.lora_params():
            if param.requires_grad:
                if hasattr(type(param), "to_local"):  # FSDP2 sets a sharded .grad itself and runs these hooks
                    self._sharded.add(id(param))
                    self._keep(param.register_post_accumulate_grad_hook(self.sharded_grad_hook))
                self._keep(param.register_hook(self.incoming_hook(name, param)))

    def incoming_hook(self, name: str, param: nn.Parameter) -> Callable[[torch.Tensor], None]:
        """A gradient computed for the parameter, by backward() or by torch.autograd.grad(). Under backward()
        autograd accumulates it into .grad right after this hook, and the norms of every .grad filled are
        read once, when that backward ends (a callback queued on it): one hook per parameter, not two.
        torch.autograd.grad() fills no .grad: its norm is taken here. The gradient itself is never held: a
        second reference makes autograd copy it into .grad instead of moving it (memory and time)."""

        def hook(grad: torch.Tensor) -> None:
            if self._accumulates(param):  # it counts once .grad shows it (a later hook may stop it; compiled
                if id(param) not in self._sharded:  # code may call this hook and accumulate nothing)
                    before = param.grad
                    self._pending.append((name, param, before, before._version if before is not None else -1))
                    self._mark_micro_step(name)
            else:
                counter = self.rec.incoming.setdefault(name, GradCounter())
                counter.count += 1
                counter.norm, counter.shard = self._arrived_norm(grad)
            self.rec.backward_seen = True

        return hook

    def finish(self) -> None:
        """The block ended: gradients still pending (their backward raised, so its callback never ran)."""
        if self._pending:
            self._accumulated()

    def _accumulated(self) -> None:
        """The end of a backward that filled .grad: each parameter whose .grad it changed counts an arrival
        (a later hook that raised may have stopped an accumulation). Dense float32/64 gradients are measured by
        one foreach call per device, the others one by one."""
        pending, self._pending = self._pending, []
        dense: dict[torch.device, list[tuple[GradCounter, torch.Tensor]]] = {}
        for name, param, before, version in pending:
            grad = param.grad
            if grad is before and (grad is None or grad._version == version):
                continue  # not accumulated
            if type(grad) is torch.Tensor and grad.dtype in WIDE_FLOATS and grad.layout == torch.strided:
                dense.setdefault(grad.device, []).append((self._counted(name), grad))
            else:
                self._count_accumulated(name, param)
        try:
            with self.paused(), torch.no_grad():
                for group in dense.values():
                    norms = foreach_norm([grad for _, grad in group])
                    for (counter, _), norm in zip(group, norms, strict=True):
                        counter.norm = norm
        except Exception:  # noqa: BLE001 - norms unknown (None): never raises into the user's backward
            pass

    def sharded_grad_hook(self, param: torch.Tensor) -> None:
        """A sharded parameter's .grad set (FSDP2 runs these hooks after its reduce-scatter)."""
        name = self.rec.found.param_names[id(param)]  # hooked only on these parameters
        self._count_accumulated(name, param)
        self._mark_micro_step(name)
        self.rec.backward_seen = True

    def _count_accumulated(self, name: str, param: torch.Tensor) -> None:
        """One accumulation into .grad, with the norm of .grad now (after accumulation, before any optimizer
        step); the norm unknown where it cannot be taken: a hook never raises into the user's backward."""
        counter = self._counted(name)
        grad = param.grad
        if grad is None:
            return
        try:  # FSDP2 / DTensor: the norm of this rank's shard (a norm over all needs a collective)
            counter.shard = hasattr(grad, "to_local")
            counter.norm = self._quiet_norm(grad.to_local() if counter.shard else grad)
        except Exception:  # noqa: BLE001 - a layout the norm does not take: arrived, norm unknown
            pass

    def _counted(self, name: str) -> GradCounter:
        """The parameter's accumulation counter, one more arrival counted, its norm not yet known."""
        counter = self.rec.grads.get(name)
        if counter is None:
            counter = self.rec.grads[name] = GradCounter()
        counter.count += 1
        counter.norm, counter.shard = None, False
        return counter

    def _mark_micro_step(self, name: str) -> None:
        if self.rec.micro_steps:
            self.rec.micro_steps[-1][1][name] = None

    def _quiet_norm(self, grad: torch.Tensor) -> torch.Tensor:
        """One op per gradient, the norm summed in float32 or wider, unseen by the deep mode's watch and outside
        any graph (a backward with create_graph=True runs with grad on): both set only where needed."""
        if not self._watched() and not torch.is_grad_enabled():
            return grad_norm(grad)
        with self.paused(), torch.no_grad():
            return grad_norm(grad)

    def _arrived_norm(self, grad: torch.Tensor) -> tuple[torch.Tensor | None, bool]:
        """The norm of a gradient torch.autograd.grad() computed, taken as it arrives (later in-place changes
        by the user are not the step's gradient); None where it cannot be taken (a vmap-batched gradient of
        is_grads_batched=True): a hook never raises into the user's backward."""
        try:
            local = local_shard(grad)
            with self.paused():  # detach is what the watch looks for: ours is not the user's
                return self._quiet_norm(local.detach()), local is not grad
        except Exception:  # noqa: BLE001
            return None, False

    def _accumulates(self, param: nn.Parameter) -> bool:
        """Whether the running backward accumulates into .grad (backward()) or only returns gradients
        (torch.autograd.grad()): one answer per backward pass, asked of the autograd engine, which then runs
        `_accumulated` at its end. A torch that cannot say which backward runs gets "no": each norm is then
        taken as the gradient arrives (the gradient as computed, before accumulation)."""
        if _GRAPH_TASK is None or not param.requires_grad:  # frozen mid-backward: the next one answers
            return False
        task, known = _GRAPH_TASK(), self._accumulating
        if task not in known:
            self.finish()  # what an earlier backward that raised left, before this one adds its own
            accumulates = will_accumulate(param) and _queue_at_backward_end(self._accumulated)
            known = self._accumulating = {task: accumulates}
        return known[task]
