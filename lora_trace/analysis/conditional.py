"""The model's own conditional paths: adapter layers that did not run because the code around them chose not
to call them (an expert no token was routed to, a layer dropped in training, a tower for an input the batch
lacks). On one step that is not a failure. Torch-free.

The evidence is the call record of the modules enclosing each adapter layer: the innermost enclosing module
that ran, and the outermost one below it that was not called. When anything inside that module ran anyway,
the path went around it (user code calling a part directly): that is a bypass, not the model's choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.records import CutKind, ModuleCall, Trace


@dataclass(frozen=True)
class Skip:
    skipped: str  # the outermost module not called, holding the adapter layer (may be the layer itself)
    enclosing: str  # the innermost module around it that ran ("" for the model itself)


def model_skips(trace: Trace, calls: dict[str, list[ModuleCall]]) -> tuple[dict[str, Skip], dict[str, Skip]]:
    """Adapter layer -> how the model skipped it, for each adapter layer that did not run by the model's choice;
    and, apart, the layers whose parent ran without calling them in default mode: a skip by the model's own
    branch, or a direct use of the base weight around them, which only deep mode (watching weight uses) tells
    apart. Those are neither proven skips nor proven bypasses."""
    if trace.enclosing is None or "note.compiled" in trace.notes:
        return {}, {}  # a run saved before this evidence existed; compiled code may run a module without its hooks
    watched, called = set(trace.enclosing), set(trace.enclosing_called)
    if not calls and not called - {""}:
        return {}, {}  # no module inside the model was seen running: the hooks saw nothing, so they prove no skip
    ran = called | set(calls) | set(trace.regions_run)
    inside_ran = {r[:i] for r in ran for i, c in enumerate(r) if c == "."}  # every module something ran inside
    direct = {m for c in trace.cuts if c.kind is CutKind.DIRECT_WEIGHT for m in c.modules}
    skips, unsure = {}, {}
    for site in trace.sites:
        if site.module in calls:
            continue
        chain = [p for p in _prefixes(site.module) if p in watched]  # innermost first, the model last
        enclosing = next((p for p in chain if p in called), None)
        if enclosing is None:
            continue  # nothing around it ran: the step went around the model
        inside = chain[:chain.index(enclosing)]
        skipped = inside[-1] if inside else site.module
        if site.module in direct or skipped in inside_ran:
            continue  # its base weight was used around it; or something inside ran without it: a bypass
        (unsure if skipped == site.module and not trace.deep else skips)[site.module] = Skip(skipped, enclosing)
    return skips, unsure


def _prefixes(name: str) -> list[str]:
    """"a.b.c" -> ["a.b", "a", ""]: the names enclosing a module, innermost first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]
