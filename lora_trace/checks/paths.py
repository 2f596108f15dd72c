"""Where the gradient path to starved LoRA parameters breaks: grad mode, detaching calls, bypass,
checkpointing, a branch off the loss. Each finding explains trainable LoRA parameters that got nothing."""

from __future__ import annotations

from ..findings import Code, Finding, Severity
from ..records import Cut, CutKind, LoraSite
from ..regions import short_name
from .facts import Facts, names

_DETACHING = (CutKind.DETACH, CutKind.DATA, CutKind.NUMPY, CutKind.TOLIST, CutKind.ITEM)
_CUT_PREFERENCE = [CutKind.DETACH, CutKind.DATA, CutKind.NUMPY, CutKind.NO_GRAD, CutKind.INFERENCE_MODE,
                   CutKind.TOLIST, CutKind.ITEM]
_DETACH_FIX = {
    CutKind.DETACH: "remove the `.detach()` there, so the gradient flows back into the LoRA layers",
    CutKind.DATA: "use the tensor itself instead of its `.data` there",
    CutKind.NUMPY: "keep the computation in torch: a NumPy round trip drops the autograd graph",
    CutKind.TOLIST: "keep the values as a tensor: `.tolist()` drops the autograd graph",
    CutKind.ITEM: "keep the value as a tensor: `.item()` drops the autograd graph",
}


def check_paths(facts: Facts) -> list[Finding]:
    groups: dict[tuple[str, str | None], dict] = {}

    def add(code: Code, site: LoraSite, cut: Cut | None = None) -> None:
        key = (code.value, cut.location if cut else None)
        group = groups.setdefault(key, {"code": code, "cut": cut, "sites": []})
        group["sites"].append(site)

    direct = {m: c for c in facts.trace.cuts if c.kind is CutKind.DIRECT_WEIGHT for m in c.modules}
    watched = [c for c in facts.trace.cuts if c.downstream and c.kind is not CutKind.DIRECT_WEIGHT]
    for site in facts.starved_sites():
        if site.disabled or site.merged or not _holds_active(site):
            continue  # the configuration checks explain it
        if not any(p.requires_grad and p.adapter in site.active_adapters and p.name in facts.starved
                   for p in site.params):
            continue  # only idle adapters starve here: adapter-inactive says so
        calls = facts.calls.get(site.module, [])
        if not calls:
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
    return [_finding(group["code"], group["sites"], group["cut"], facts) for group in groups.values()]


def _bypass_fix(sites: list[LoraSite], facts: Facts) -> str:
    suggestions = [(prefix, regex) for prefix, regex in facts.trace.target_suggestions.items()
                   if any(s.module.startswith(prefix + ".") for s in sites)]
    fix = "Encode through the part of the model that holds the LoRA (the path the adapter was meant for)"
    if suggestions:
        prefix, regex = suggestions[0]
        fix += (f", or put LoRA on the layers this step runs: in {short_name(prefix)}, "
                f"LoraConfig(target_modules=r\"{regex}\"); lora-trace checked with PEFT's matching that it "
                "selects exactly the linear layers the traced step ran there")
    elif facts.trace.adaptable_run is None:
        fix += "; lora_trace.diagnose() proposes a target_modules value checked against this model"
    return fix + "."


def _holds_active(site: LoraSite) -> bool:
    return any(a in site.adapters for a in site.active_adapters) and all(
        s != 0 for a, s in site.scalings if a in site.active_adapters)


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
    where = f" at {cut.location}" if cut and cut.location else ""
    count = f"{len(modules)} LoRA layer{'s' if len(modules) != 1 else ''} ({n_params} trainable parameters)"
    evidence: dict = {"starved_params": n_params}
    if code is Code.GRAD_DISABLED:
        mode = "inference_mode" if cut and cut.kind is CutKind.INFERENCE_MODE else "no_grad"
        what = "fed a path that ran under" if cut is not None and cut.downstream else "ran under"
        message = (f"{count} in {names(regions)} {what} torch.{mode}(){where}, so autograd recorded nothing "
                   "for them and they got no gradient.")
        fix = (f"Run the training forward with grad enabled: replace the `with torch.{mode}():`{where} by "
               "`with torch.set_grad_enabled(self.training):`, or keep no_grad for evaluation code only.")
    elif code is Code.DETACHED:
        message = (f"{count} in {names(regions)} ran with grad enabled, but the path to the loss is cut by "
                   f"{cut.detail if cut else 'a detaching call'}{where}; no gradient came back.")
        fix = (_DETACH_FIX[cut.kind] if cut else "remove the detaching call") + "."
    elif code is Code.CHECKPOINT_NO_GRAD:
        message = (f"{count} in {names(regions)} sit inside reentrant activation checkpointing whose inputs "
                   f"do not require grad ({cut.detail if cut else ''}): the checkpointed block's output does "
                   "not require grad, so backward never re-runs it and its LoRA gets no gradient.")
        fix = ("Call `model.enable_input_require_grads()` before training, or use non-reentrant checkpointing: "
               "`model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})`.")
    elif code is Code.LORA_BYPASSED:
        traversed = facts.traversed_regions
        evidence.update(regions_traversed=list(traversed), regions_holding=list(regions))
        if cut is not None:
            message = (f"{count} in {names(regions)} never ran: their base weight was used directly "
                       f"({cut.detail}){where}, around the LoRA wrapper.")
            fix = "Call the module itself (`layer(x)`) instead of using its `.weight` directly."
        else:
            message = (f"{count} in {names(regions)} never ran in this step, so their trainable LoRA got no "
                       f"gradient. The step went through {names(traversed, 6) or 'no region holding LoRA'}.")
            fix = _bypass_fix(sites, facts)
    else:
        message = (f"{count} in {names(regions)} ran with grad enabled, but their output never reaches the "
                   "loss, so they got no gradient.")
        if not facts.trace.deep:
            message += " Re-run with trace(..., deep=True) or lora_trace.diagnose() to find a detaching line."
        fix = "Make the loss depend on these layers' output, or take LoRA off layers whose output is unused."
    return Finding(code.value, Severity.ERROR.value, message, fix, modules, regions,
                   cut.location if cut else None, cut.stack if cut else (), evidence)
