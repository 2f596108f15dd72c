"""Adapter state and flags: missing adapter, frozen, inactive, eval mode."""

from __future__ import annotations

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import LANGUAGES, clauses, listing, text
from ...core.records import LoraSite
from ..facts import Facts


def check_config(facts: Facts) -> list[Finding]:
    trace = facts.trace
    findings: list[Finding] = []
    if not trace.sites:
        key = "no-lora-params" if trace.peft_configs else "adapter-missing"
        code = Code.NO_LORA_PARAMS if trace.peft_configs else Code.ADAPTER_MISSING
        return [make_finding(code, Severity.ERROR, text(key), text(f"{key}.fix"))]
    inactive = {s.module: reason for s in trace.sites if (reason := _inactive_reason(s))}
    if inactive:
        sites = [s for s in trace.sites if s.module in inactive]
        reasons = {tuple(sorted(r.items())): r for r in inactive.values()}
        reason_text = {lang: " / ".join(sorted({r[lang] for r in reasons.values()})) for lang in LANGUAGES}
        kinds = sorted({r["kind"] for r in inactive.values()})
        fix = clauses(*[text(f"fix.{k}") for k in kinds])
        regions = listing({s.region for s in sites})
        findings.append(make_finding(
            Code.ADAPTER_INACTIVE, Severity.ERROR,
            text("adapter-inactive", layers=len(sites), regions=regions, reasons=reason_text), fix,
            modules=tuple(s.module for s in sites), regions=tuple(sorted({s.region for s in sites})),
            evidence={"reasons": sorted({r["en"] for r in inactive.values()})},
        ))
    frozen = [s for s in trace.sites if s.module not in inactive and _frozen_active(s)]
    if frozen:
        count = sum(len(_frozen_active(s)) for s in frozen)
        findings.append(make_finding(
            Code.LORA_FROZEN, Severity.ERROR,
            text("lora-frozen", params=count, regions=listing({s.region for s in frozen})), text("lora-frozen.fix"),
            modules=tuple(s.module for s in frozen), regions=tuple(sorted({s.region for s in frozen})),
            evidence={"frozen_params": count},
        ))
    if trace.eval_modules:
        findings.append(make_finding(
            Code.EVAL_MODE, Severity.WARNING,
            text("eval-mode", modules=listing(trace.eval_modules, empty=text("model.root"))),
            text("eval-mode.fix"), modules=trace.eval_modules, regions=trace.eval_modules,
        ))
    return findings


def _inactive_reason(site: LoraSite) -> dict[str, str] | None:
    """Why this layer adds no delta for an adapter that holds LoRA to train ({"kind", "en", "zh"}), or None."""
    if site.disabled:
        return {"kind": "disabled", **text("reason.disabled")}
    if site.merged:
        return {"kind": "merged", **text("reason.merged")}
    idle = sorted({p.adapter for p in site.params if p.requires_grad and p.adapter not in site.active_adapters})
    if idle or not any(a in site.adapters for a in site.active_adapters):
        return {"kind": "idle", **text("reason.idle", idle=", ".join(idle) or "-",
                                       active=", ".join(site.active_adapters) or "-")}
    if any(s == 0 for a, s in site.scalings if a in site.active_adapters):
        return {"kind": "scaled", **text("reason.scaled")}
    return None


def _frozen_active(site: LoraSite) -> list[str]:
    return [p.name for p in site.params if p.adapter in site.active_adapters and not p.requires_grad]
