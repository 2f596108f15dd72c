"""Where the gradient path to starved LoRA parameters breaks: grad mode, detaching calls, bypass,
checkpointing, a branch off the loss. Each finding explains trainable LoRA parameters that got nothing."""

from __future__ import annotations

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import at, join, listing, place, text
from ...core.records import Cut, CutKind, LoraSite
from ...core.regions import short_name
from ..facts import Facts

_DETACHING = (CutKind.DETACH, CutKind.DATA, CutKind.NUMPY, CutKind.TOLIST, CutKind.ITEM, CutKind.GRAPH_END)
_CUT_PREFERENCE = [CutKind.DETACH, CutKind.DATA, CutKind.NUMPY, CutKind.NO_GRAD, CutKind.INFERENCE_MODE,
                   CutKind.TOLIST, CutKind.ITEM, CutKind.GRAPH_END]


def check_paths(facts: Facts) -> list[Finding]:
    groups: dict[tuple[str, str | None], dict] = {}

    def add(code: Code, site: LoraSite, cut: Cut | None = None) -> None:
        key = (code.value, cut.location if cut else None)
        group = groups.setdefault(key, {"code": code, "cut": cut, "sites": []})
        group["sites"].append(site)

    direct = {m: c for c in facts.trace.cuts if c.kind is CutKind.DIRECT_WEIGHT for m in c.modules}
    watched = [c for c in facts.trace.cuts if c.downstream and c.kind is not CutKind.DIRECT_WEIGHT]
    timeline = facts.timeline
    unsure = []  # layers their parent ran without calling (default mode): a skip or a bypass, not told apart
    for site in facts.starved_sites():
        if all(timeline.explained(site, p) or p in timeline.frozen_during_step
               for p in site.trainable_params if p in facts.starved):
            continue  # inactive when it ran, or frozen by the step: the configuration checks say so
        calls = facts.calls.get(site.module, [])
        if not calls and site.module in facts.unsure_skips:
            unsure.append(site)
        elif not calls:
            add(Code.LORA_BYPASSED, site, direct.get(site.module))
        elif not any(call.grad_enabled for call in calls):
            cut = facts.trace.cuts[calls[0].cut] if calls[0].cut is not None else None
            code = Code.CHECKPOINT_NO_GRAD if cut and cut.kind is CutKind.CHECKPOINT else Code.GRAD_DISABLED
            add(code, site, cut)
        else:
            cut = _best_cut(site, facts, watched)
            if cut is None:
                add(Code.LORA_OFF_PATH, site)
            else:
                add(Code.DETACHED if cut.kind in _DETACHING else Code.GRAD_DISABLED, site, cut)
    findings = [_finding(group["code"], group["sites"], group["cut"], facts) for group in groups.values()]
    return findings + ([_unsure(unsure, facts)] if unsure else []) + _skipped(facts)


def _unsure(sites: list[LoraSite], facts: Facts) -> Finding:
    """Layers their parent ran without calling, in default mode: the model's own branch (an input this batch
    lacks: healthy) or code using their base weight directly (a bypass). A warning that says which evidence
    would tell, never an error it cannot show."""
    modules = tuple(sorted(s.module for s in sites))
    kind = facts.kind_of(modules)
    n_params = sum(1 for s in sites for p in s.trainable_params if p in facts.starved)
    parents = sorted({short_name(facts.unsure_skips[m].enclosing) or facts.trace.model_class for m in modules})
    message = text("bypassed.unsure", what=text("layers", count=len(modules), params=n_params, kind=kind),
                   parents=listing(parents), kind=kind)
    return make_finding(Code.LORA_BYPASSED, Severity.WARNING, message, text("bypassed.unsure.fix"),
                        modules=modules, regions=tuple(sorted({s.region for s in sites})),
                        evidence={"starved_params": n_params, "unsure": True})


def _sharded_skip(facts: Facts, modules: tuple[str, ...], skipped: list[str]) -> Finding:
    """A rank of a sharded model (FSDP2) skipped parts of it and its step raised: every rank all-gathers
    and reduce-scatters each unit it runs, so the others waited in a collective this rank never joined."""
    params = sum(len(facts.sites[m].trainable_params) for m in modules)
    return make_finding(
        Code.DDP_UNUSED, Severity.ERROR,
        text("sharded-skip", what=text("layers", count=len(modules), params=params, kind=facts.kind_of(modules)),
             skipped=listing(skipped), error=facts.trace.error.split("\n")[0][:160]),
        text("sharded-skip.fix"), modules=modules, regions=facts.regions_of(modules),
        evidence={"skipped": skipped, "raised_in_backward": facts.trace.raised_in_backward})


def _skipped(facts: Facts) -> list[Finding]:
    """Adapter layers the model's own control flow did not run this step: info, with the evidence."""
    skips = {m: s for m, s in facts.skips.items() if facts.sites[m].trainable_params}
    if not skips:
        return []
    modules = tuple(sorted(skips))
    skipped = sorted({s.skipped for s in skips.values()})
    enclosing = sorted({s.enclosing for s in skips.values()})
    if facts.sharded and facts.trace.error:
        return [_sharded_skip(facts, modules, skipped)]
    message = text("skipped-by-model", count=len(modules), total=len(facts.trace.sites), skipped=listing(skipped),
                   enclosing=listing(enclosing, empty=text("model.root")))
    if not facts.trace.deep:  # weight uses are watched in deep mode only: say what this evidence cannot exclude
        message = join(message, text("skipped-by-model.default-mode"))
    return [make_finding(
        Code.SKIPPED_BY_MODEL, Severity.INFO, message,
        text("skipped-by-model.fix"), modules=modules, regions=facts.regions_of(modules),
        evidence={"skipped": skipped, "ran": enclosing})]


def _bypass_fix(sites: list[LoraSite], facts: Facts) -> dict[str, str]:
    suggestions = [(prefix, regex) for prefix, regex in facts.trace.target_suggestions.items()
                   if any(s.module.startswith(prefix + ".") for s in sites)]
    parts = [text("bypassed.fix", kind=facts.kind_of([s.module for s in sites]))]
    if suggestions:
        prefix, regex = suggestions[0]
        parts.append(text("bypassed.fix.regex", model=short_name(prefix), regex=regex))
    elif facts.trace.adaptable_run is None:
        parts.append(text("bypassed.fix.deep"))
    parts.append(text("clauses.end"))
    return join(*parts)


def _best_cut(site: LoraSite, facts: Facts, watched: list[Cut]) -> Cut | None:
    starved = {p for p in site.trainable_params if p in facts.starved}
    hits = [c for c in watched if starved & set(c.params)]
    if not hits:
        return None
    return min(hits, key=lambda c: _CUT_PREFERENCE.index(c.kind))


def _finding(code: Code, sites: list[LoraSite], cut: Cut | None, facts: Facts) -> Finding:
    modules = tuple(sorted(s.module for s in sites))
    regions = tuple(sorted({s.region for s in sites}))
    n_params = sum(1 for s in sites for p in s.trainable_params if p in facts.starved)
    where = at(cut.location if cut else None)
    kind = facts.kind_of(modules)
    what = text("layers", count=len(modules), params=n_params, kind=kind)
    common = dict(what=what, regions=listing(regions), at=where, detail=cut.detail if cut else "", kind=kind)
    evidence: dict = {"starved_params": n_params}
    if code is Code.GRAD_DISABLED:
        mode = "inference_mode" if cut and cut.kind is CutKind.INFERENCE_MODE else "no_grad"
        key = "grad-disabled.fed" if cut is not None and cut.downstream else "grad-disabled.ran"
        if cut is not None and cut.how in ("call", "global"):  # no block or decorator: switched off by a call
            key = f"grad-disabled.{cut.how}"
            fix = text("grad-disabled.fix.global", place=place(cut.location))
        elif cut is not None and cut.how == "library" and not cut.downstream:
            key = "grad-disabled.library"
            fix = text("grad-disabled.fix.library", place=place(cut.location))
        elif cut is not None and cut.how == "decorator":
            fix = text("grad-disabled.fix.decorator", mode=mode, place=place(cut.location))
        else:
            fix = text("grad-disabled.fix", mode=mode, place=place(cut.location if cut else None))
        message = text(key, mode=mode, **common)
        evidence["grad_off"] = cut.how if cut is not None and cut.how else "block"
    elif code is Code.DETACHED:
        how = cut.kind.value if cut and cut.kind in _DETACHING else "detach"
        message, fix = text("detached", **common), text(f"detached.fix.{how}", kind=kind)
    elif code is Code.CHECKPOINT_NO_GRAD:
        message, fix = text("checkpoint", **common), text("checkpoint.fix")
    elif code is Code.LORA_BYPASSED:
        traversed = facts.traversed_regions
        evidence.update(regions_traversed=list(traversed), regions_holding=list(regions))
        if cut is not None:
            message, fix = text("bypassed.direct", **common), text("bypassed.direct.fix")
        elif "note.compiled" in facts.trace.notes:  # compiled code runs modules without their hooks
            message, fix = text("bypassed.compiled", **common), text("bypassed.compiled.fix")
        elif not (facts.trace.calls or facts.trace.regions_run or facts.trace.enclosing_called):
            message, fix = text("bypassed.unused", **common), text("bypassed.unused.fix")  # nothing of it ran
        else:
            message = text("bypassed", traversed=listing(traversed, 6, empty="-"), **common)
            fix = _bypass_fix(sites, facts)
    else:
        message = text("off-path", **common)
        if not facts.trace.deep:
            message = join(message, text("off-path.deep"))
        else:
            message = join(message, text("off-path.none"))
        fix = text("off-path.fix")
    return make_finding(code, Severity.ERROR, message, fix, modules=modules, regions=regions,
                        location=cut.location if cut else None, stack=cut.stack if cut else (), evidence=evidence)
