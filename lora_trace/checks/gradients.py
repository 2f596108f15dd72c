"""What arrived: a loss without grad_fn, non-finite gradients, the zero lora_A gradient at init, the optimizer."""

from __future__ import annotations

from ..findings import Code, Finding, Severity
from .facts import Facts, names


def check_gradients(facts: Facts) -> list[Finding]:
    trace = facts.trace
    findings: list[Finding] = []
    if trace.losses and not any(loss.has_grad_fn for loss in trace.losses):
        findings.append(Finding(
            Code.LOSS_NO_GRAD.value, Severity.ERROR.value,
            "The loss has no grad_fn: nothing it was computed from requires grad, so backward cannot reach "
            "any LoRA parameter.",
            "Find where the loss's inputs lose their graph (no_grad, detach, frozen parameters); "
            "lora_trace.diagnose() names the line.",
            evidence={"loss_sources": sorted({loss.source for loss in trace.losses})},
        ))
    nonfinite = sorted(a.param for a in trace.arrivals if a.finite is False)
    if nonfinite:
        modules = tuple(sorted({p.rsplit(".lora_", 1)[0] for p in nonfinite}))
        findings.append(Finding(
            Code.NONFINITE_GRAD.value, Severity.ERROR.value,
            f"{len(nonfinite)} LoRA parameters got NaN/Inf gradients ({names(modules)}).",
            "Lower the learning rate, check the loss for log(0) or division by zero, or use a GradScaler.",
            modules, tuple(sorted({facts.sites[m].region for m in modules if m in facts.sites})),
        ))
    findings.extend(_zero_at_init(facts))
    if trace.optimizer is not None:
        missing = sorted(facts.trainable - set(trace.optimizer.params))
        if missing:
            modules = tuple(sorted({p.rsplit(".lora_", 1)[0] for p in missing}))
            findings.append(Finding(
                Code.NOT_IN_OPTIMIZER.value, Severity.ERROR.value,
                f"{len(missing)} trainable LoRA parameters are in no optimizer param group: they get gradients "
                "but nothing updates them (an optimizer built before get_peft_model?).",
                "Build the optimizer after get_peft_model: "
                "`optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=...)`.",
                modules, tuple(sorted({facts.sites[m].region for m in modules if m in facts.sites})),
                evidence={"missing_params": len(missing)},
            ))
    return findings


def _zero_at_init(facts: Facts) -> list[Finding]:
    """lora_A gradients exactly zero only because lora_B is still all zero: normal at the first step."""
    arrivals = {a.param: a for a in facts.trace.arrivals}
    modules = []
    for site in facts.trace.sites:
        a_params = [p for p in site.params if p.role in ("lora_A", "lora_embedding_A")]
        b_params = {p.adapter: p for p in site.params if p.role in ("lora_B", "lora_embedding_B")}
        for a in a_params:
            b = b_params.get(a.adapter)
            got_a, got_b = arrivals.get(a.name), arrivals.get(b.name) if b else None
            if b and b.all_zero and got_a and got_a.zero and got_b and got_b.zero is False:
                modules.append(site.module)
                break
    if not modules:
        return []
    return [Finding(
        Code.ZERO_GRAD_AT_INIT.value, Severity.INFO.value,
        f"{len(modules)} LoRA layers have exactly-zero lora_A gradients because lora_B is still all zero; "
        "lora_B got a gradient, so lora_A will after the first update. This is normal at initialisation.",
        "Nothing to fix.",
        tuple(modules), tuple(sorted({facts.sites[m].region for m in modules})),
    )]
