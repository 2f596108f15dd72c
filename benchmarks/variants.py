"""One training step, done plainly or under a diagnostic tool: the things the benchmarks set side by side.

Each variant does what a user of that tool does to look at one training step, and nothing more:
- plain: `loss = step(model); loss.backward()`.
- lora_trace: the same step inside `with lora_trace.trace(model)` (default) or `trace(model, deep=True)`;
  the clock covers the whole `with` block (setting up, the step, building the trace on exit). Reading
  `t.diagnosis` (the checks) is timed apart, outside the step's clock.
- lora_trace.diagnose(): the one-shot dry run (deep evidence, a step, then everything restored).
- torchviz: the step with `make_dot(loss, params)` between forward and backward; "+svg" also renders it
  with graphviz (`.pipe(format="svg")`).
- torchview: `draw_graph(model, input_data, mode="train")` (its own forward, under no_grad) and then the
  plain step, since its forward cannot be backpropagated; "+svg" also renders.
- TorchLens: `torchlens.trace(model, args, capture=CaptureOptions(save_grads=True, backward_ready=True,
  unwrap_when_done=True))` then `trace.log_backward(loss)`: forward and backward both logged, gradients
  saved (the pre-2.0 `log_forward_pass(..., save_gradients=True)`). `unwrap_when_done` restores torch's
  functions after each call, so the plain steps interleaved with it stay plain.
- anomaly: the step inside `torch.autograd.set_detect_anomaly(True)`.

`verdict()` says what the tool concludes about the gradients of the step it saw (first call only: the
model is then at initialisation, `lora_B` all zero, so every `lora_A` gradient is exactly zero and that
is normal).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch

from .models import Bench


class Variant:
    """A way to run one training step. `run()` is timed; `cleanup()` runs after it, outside the clock."""

    name = "plain"
    label = "plain step (forward + backward)"
    profile = False  # whether a failing target should be explained with a cProfile of this variant

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.model = bench.model
        self.details: dict[str, list[float]] = {}
        self._verdict: dict[str, Any] | None = None

    def prepare(self) -> None:
        """Import the tool; raising here records the tool as unavailable with the error line."""

    def run(self) -> None:
        self.bench.step(self.model).backward()

    def cleanup(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def verdict(self) -> dict[str, Any] | None:
        return self._verdict

    def _time(self, key: str, seconds: float) -> None:
        self.details.setdefault(key, []).append(seconds)


class LoraTrace(Variant):
    profile = True

    def __init__(self, bench: Bench, *, deep: bool) -> None:
        super().__init__(bench)
        self.deep = deep
        self.name = "lora_trace-deep" if deep else "lora_trace"
        self.label = "lora_trace.trace(model, deep=True)" if deep else "lora_trace.trace(model)"
        self._tracer: Any = None
        self._finished: list[weakref.ref[Any]] = []

    def prepare(self) -> None:
        import lora_trace  # noqa: F401

    def run(self) -> None:
        import lora_trace

        start = time.perf_counter()
        with lora_trace.trace(self.model, deep=self.deep) as tracer:
            inside = time.perf_counter()
            self.bench.step(self.model).backward()
            done = time.perf_counter()
        end = time.perf_counter()
        self._time("enter_s", inside - start)
        self._time("inside_s", done - inside)
        self._time("exit_s", end - done)
        self._tracer = tracer

    def cleanup(self) -> None:
        start = time.perf_counter()
        diagnosis = self._tracer.diagnosis
        self._time("diagnosis_s", time.perf_counter() - start)
        if self._verdict is None:
            self._verdict = lora_trace_verdict(diagnosis)
        self._finished.append(weakref.ref(self._tracer))
        self._tracer = diagnosis = None
        super().cleanup()

    def kept_alive(self) -> tuple[int, int]:
        """(finished tracers still alive after their last reference was dropped, finished tracers):
        anything above zero is held by a reference cycle until Python's cyclic garbage collector runs."""
        return sum(ref() is not None for ref in self._finished), len(self._finished)


class LoraDiagnose(Variant):
    name = "lora_trace-diagnose"
    label = "lora_trace.diagnose(model, step) (dry run, restores everything)"
    profile = True

    def prepare(self) -> None:
        import lora_trace  # noqa: F401

    def run(self) -> None:
        import lora_trace

        self._diagnosis = lora_trace.diagnose(self.model, self.bench.step)

    def cleanup(self) -> None:
        if self._verdict is None:
            self._verdict = lora_trace_verdict(self._diagnosis)
        self._diagnosis = None
        super().cleanup()


def lora_trace_verdict(diagnosis: Any) -> dict[str, Any]:
    info = [f for f in diagnosis.findings if f.code == "zero-grad-at-init"]
    return {
        "ok": bool(diagnosis.ok),
        "codes": list(diagnosis.codes()),
        "zero_grad_at_init_modules": len(info[0].modules) if info else 0,
        "says": ("no error (diagnosis.ok is True); zero-grad-at-init (info) on "
                 f"{len(info[0].modules) if info else 0} modules: lora_A grads are zero because lora_B is zero")
        if diagnosis.ok else f"errors: {', '.join(diagnosis.codes('error'))}",
    }


class Torchviz(Variant):
    def __init__(self, bench: Bench, *, svg: bool) -> None:
        super().__init__(bench)
        self.svg = svg
        self.name = "torchviz-svg" if svg else "torchviz"
        self.label = "torchviz make_dot + render SVG" if svg else "torchviz make_dot (graph build)"

    def prepare(self) -> None:
        from torchviz import make_dot  # noqa: F401

        if self.svg:
            _require_dot()

    def run(self) -> None:
        from torchviz import make_dot

        loss = self.bench.step(self.model)
        dot = make_dot(loss, params=dict(self.model.named_parameters()))
        if self.svg:
            dot.pipe(format="svg")
        loss.backward()
        if self._verdict is None:
            self._verdict = {"says": "draws the autograd graph; no verdict on gradients"}


class Torchview(Variant):
    def __init__(self, bench: Bench, *, svg: bool) -> None:
        super().__init__(bench)
        self.svg = svg
        self.name = "torchview-svg" if svg else "torchview"
        self.label = f"torchview draw_graph{' + render SVG' if svg else ''}, then the step"

    def prepare(self) -> None:
        from torchview import draw_graph  # noqa: F401

        if self.svg:
            _require_dot()

    def run(self) -> None:
        from torchview import draw_graph

        graph = draw_graph(self.model, input_data=list(self.bench.forward_args), mode="train")
        if self.svg:
            graph.visual_graph.pipe(format="svg")
        self.bench.step(self.model).backward()  # draw_graph's forward runs under no_grad: train separately
        if self._verdict is None:
            self._verdict = {"says": "draws the module graph of a no_grad forward; no verdict on gradients"}


class TorchLens(Variant):
    name = "torchlens"
    label = "TorchLens trace(save_grads=True) + log_backward"

    def prepare(self) -> None:
        import torchlens  # noqa: F401
        from torchlens.options import CaptureOptions  # noqa: F401

    def run(self) -> None:
        import torchlens
        from torchlens.options import CaptureOptions

        capture = CaptureOptions(save_grads=True, backward_ready=True, unwrap_when_done=True)
        trace = torchlens.trace(self.model, list(self.bench.forward_args), capture=capture)
        trace.log_backward(trace["output"].out)
        self._trace = trace

    def cleanup(self) -> None:
        if self._verdict is None:
            self._verdict = torchlens_verdict(self._trace, self.bench.lora_modules)
        cleanup = getattr(self._trace, "cleanup", None)
        if callable(cleanup):
            cleanup()
        self._trace = None
        super().cleanup()


def torchlens_verdict(trace: Any, lora_modules: int) -> dict[str, Any]:
    """What TorchLens' gradient-flow audit says about the step: which ops it flags dead (zero gradient)."""
    from torchlens.debug import gradient_flow_audit_rows

    rows, attrs = gradient_flow_audit_rows(trace)
    dead = [r for r in rows if r.get("dead")]
    dead_lora_a = [r for r in dead if ".lora_A." in str(r.get("module") or "")]
    frontier = [r for r in dead_lora_a if r.get("is_frontier")]
    return {
        "audited_ops": len(rows),
        "dead_ops": len(dead),
        "dead_lora_A_ops": len(dead_lora_a),
        "dead_lora_A_frontier": len(frontier),
        "lora_modules": lora_modules,
        "example": f"{dead_lora_a[0]['op']} in {dead_lora_a[0]['module']}: grad_norm {dead_lora_a[0]['grad_norm']}"
        if dead_lora_a else None,
        "says": f"gradient_flow_audit flags {len(dead)} ops dead, {len(dead_lora_a)} of them the lora_A "
                f"outputs ({len(frontier)} marked as the frontier, i.e. the culprit) of {lora_modules} LoRA modules",
    }


class Anomaly(Variant):
    name = "anomaly"
    label = "torch.autograd.set_detect_anomaly(True)"

    def run(self) -> None:
        with torch.autograd.set_detect_anomaly(True):
            self.bench.step(self.model).backward()
        if self._verdict is None:
            self._verdict = {"says": "raises only on NaN/Inf in backward; silent here (no verdict on zero gradients)"}


class Guardtower(Variant):
    """The peer: `guardtower.audit` runs one instrumented step (forward + backward) with forward and full
    backward hooks on every module, then its checks."""

    name = "guardtower"
    label = "guardtower.audit(model, step) (one instrumented step)"

    def prepare(self) -> None:
        import guardtower  # noqa: F401

    def run(self) -> None:
        import guardtower

        report = guardtower.audit(self.model, lambda: self.bench.step(self.model))
        if self._verdict is None:
            self._verdict = {"errors": [f.check for f in report.errors], "warnings": [f.check for f in report.warnings]}


def _require_dot() -> None:
    import shutil

    if shutil.which("dot") is None:
        raise RuntimeError("graphviz `dot` not found on PATH (Debian: apt-get install graphviz)")


def make(name: str, bench: Bench) -> Variant:
    factories = {
        "plain": lambda: Variant(bench),
        "lora_trace": lambda: LoraTrace(bench, deep=False),
        "lora_trace-deep": lambda: LoraTrace(bench, deep=True),
        "lora_trace-diagnose": lambda: LoraDiagnose(bench),
        "torchviz": lambda: Torchviz(bench, svg=False),
        "torchviz-svg": lambda: Torchviz(bench, svg=True),
        "torchview": lambda: Torchview(bench, svg=False),
        "torchview-svg": lambda: Torchview(bench, svg=True),
        "torchlens": lambda: TorchLens(bench),
        "anomaly": lambda: Anomaly(bench),
        "guardtower": lambda: Guardtower(bench),
    }
    if name not in factories:
        raise ValueError(f"unknown variant {name!r}; one of: {', '.join(sorted(factories))}")
    return factories[name]()


def init_truth(bench: Bench) -> dict[str, Any]:
    """What a real backward at initialisation gives: lora_B all zero, lora_A grads exactly zero, lora_B not."""
    model = bench.model
    bench.step(model).backward()
    params = dict(model.named_parameters())
    a = [p for n, p in params.items() if ".lora_A." in n and p.requires_grad]
    b = [p for n, p in params.items() if ".lora_B." in n and p.requires_grad]
    truth = {
        "lora_A_params": len(a),
        "lora_A_grad_exactly_zero": sum(p.grad is not None and bool((p.grad == 0).all()) for p in a),
        "lora_B_all_zero": sum(bool((p == 0).all()) for p in b),
        "lora_B_grad_nonzero": sum(p.grad is not None and bool((p.grad != 0).any()) for p in b),
    }
    model.zero_grad(set_to_none=True)
    return truth
