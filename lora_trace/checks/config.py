"""Adapter state and flags: missing adapter, frozen, inactive, eval mode."""

from __future__ import annotations

from ..findings import Code, Finding, Severity
from ..records import LoraSite
from .facts import Facts, names


def check_config(facts: Facts) -> list[Finding]:
    trace = facts.trace
    findings: list[Finding] = []
    if not trace.sites:
        if trace.peft_configs:
            findings.append(Finding(
                Code.NO_LORA_PARAMS.value, Severity.ERROR.value,
                "A PEFT config is present but the model holds no LoRA layer, so there is nothing to train.",
                "Check target_modules against the model's module names (`lora-trace targets`).",
            ))
        else:
            findings.append(Finding(
                Code.ADAPTER_MISSING.value, Severity.ERROR.value,
                "No PEFT LoRA layer in the model: LoRA was never applied, or merge_and_unload() removed it.",
                "Wrap the model with `peft.get_peft_model(model, LoraConfig(...))` before building the optimizer.",
            ))
        return findings
    inactive = [s for s in trace.sites if _inactive_reason(s)]
    if inactive:
        reasons = sorted({_inactive_reason(s) or "" for s in inactive})
        findings.append(Finding(
            Code.ADAPTER_INACTIVE.value, Severity.ERROR.value,
            f"{len(inactive)} LoRA layers in {names({s.region for s in inactive})} add no LoRA delta: "
            f"the adapter is {' / '.join(reasons)}.",
            _inactive_fix(reasons),
            tuple(s.module for s in inactive), tuple(sorted({s.region for s in inactive})),
            evidence={"reasons": reasons},
        ))
    frozen = [s for s in trace.sites if s not in inactive and _frozen_active(s)]
    if frozen:
        count = sum(len(_frozen_active(s)) for s in frozen)
        findings.append(Finding(
            Code.LORA_FROZEN.value, Severity.ERROR.value,
            f"{count} LoRA parameters of the active adapter in {names({s.region for s in frozen})} have "
            "requires_grad=False, so they cannot learn.",
            "Re-enable them after any freezing: `for n, p in model.named_parameters(): "
            "p.requires_grad_(p.requires_grad or 'lora_' in n)`; load adapters with `is_trainable=True`.",
            tuple(s.module for s in frozen), tuple(sorted({s.region for s in frozen})),
            evidence={"frozen_params": count},
        ))
    if trace.eval_modules:
        findings.append(Finding(
            Code.EVAL_MODE.value, Severity.WARNING.value,
            f"{names(trace.eval_modules)} {'is' if len(trace.eval_modules) == 1 else 'are'} in eval mode during "
            "the traced step: dropout (LoRA dropout too) is off. Not a cut by itself.",
            "Call `model.train()` before the training step.",
            trace.eval_modules, trace.eval_modules,
        ))
    return findings


def _inactive_reason(site: LoraSite) -> str | None:
    """Why this layer adds no delta for an adapter that holds LoRA to train, or None."""
    if site.disabled:
        return "disabled"
    if site.merged:
        return "merged into the base weights"
    idle = sorted({p.adapter for p in site.params if p.requires_grad and p.adapter not in site.active_adapters})
    if idle or not any(a in site.adapters for a in site.active_adapters):
        return f"not the active adapter ({', '.join(idle) or 'none'} trainable; active: " \
               f"{', '.join(site.active_adapters) or 'none'})"
    if any(s == 0 for a, s in site.scalings if a in site.active_adapters):
        return "scaled to zero"
    return None


def _inactive_fix(reasons: list[str]) -> str:
    fixes = []
    if "disabled" in reasons:
        fixes.append("re-enable the adapter layers (`model.enable_adapter_layers()`, or leave the "
                     "`with model.disable_adapter():` block before training)")
    if any(r.startswith("merged") for r in reasons):
        fixes.append("unmerge before training (`model.unmerge_adapter()`)")
    if any(r.startswith("not the active") for r in reasons):
        fixes.append("activate the adapter you train (`model.set_adapter(name)`), or freeze the ones you do not")
    if "scaled to zero" in reasons:
        fixes.append("restore the scale (`lora_alpha` > 0, or undo `scale_layer(0)`)")
    return "; ".join(fixes).capitalize() + "."


def _frozen_active(site: LoraSite) -> list[str]:
    return [p.name for p in site.params if p.adapter in site.active_adapters and not p.requires_grad]
