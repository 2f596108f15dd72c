"""The text report: the familiar seven-step manual check, each step with a verdict and its evidence,
then the root cause with its source line and fix. Torch-free; works on loaded runs."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..analysis.facts import Facts
from ..core.errors import BadInputError
from ..core.findings import Severity
from ..core.messages import LANGUAGES, MESSAGES, adapter_kind, listing, say
from ..core.printable import printable
from ..core.regions import short_name

_COLORS = {"ok": "32", "FAIL": "31", "warn": "33", "n/a": "90", "info": "36"}


class _Say:
    """The report's words in one language: `say("s1")` is the catalogue's "report.s1"."""

    def __init__(self, lang: str, kind: str = "LoRA") -> None:
        self.lang = lang
        self.kind = kind  # what the adapter layers are called: the tuner's name ("LoRA", "LoHa", ...)

    def __call__(self, key: str, **fields: object) -> str:
        return say(f"report.{key}", self.lang, kind=self.kind, **fields)

    def model(self, name: str) -> str:
        """A module's display name; the model itself (named "") as the catalogue calls it."""
        return short_name(name) or say("model.root", self.lang)


def _micro_steps(trace: Any, facts: Facts, say: _Say) -> str:
    """Several calls of the model, call by call: how many gradients arrived after each, which calls DDP synced.
    Gradients after more than one call are an accumulation window; after the last only, one backward over all
    the calls' outputs (a contrastive or paired loss) or earlier backward passes that reached no adapter."""
    counts = ", ".join(str(len(set(m.params) & facts.trainable)) for m in trace.micro_steps)
    synced = [m.synced for m in trace.micro_steps]
    after = [i for i, m in enumerate(trace.micro_steps) if m.params]
    if after == [len(synced) - 1]:
        return say("s6.micro.last", calls=len(synced), counts=counts, trainable=len(facts.trainable))
    if len(after) < 2:  # after one earlier call, or none: no window either
        return say("s6.micro.calls", calls=len(synced), counts=counts, trainable=len(facts.trainable))
    if None in synced:
        return say("s6.micro", calls=len(synced), counts=counts, trainable=len(facts.trainable))
    return say("s6.micro.ddp", calls=len(synced), counts=counts, trainable=len(facts.trainable),
               local=synced.count(False), synced=synced.count(True))


def render_report(diagnosis: Any, *, lang: str = "en", color: bool = False) -> str:
    if lang not in LANGUAGES:
        raise BadInputError(f"lang={lang!r} is not available; the report speaks: {', '.join(LANGUAGES)}")
    say = _Say(lang, adapter_kind(site.tuner for site in diagnosis.trace.sites)[lang])
    trace = diagnosis.trace
    facts = Facts(trace)
    codes = set(diagnosis.codes("error"))
    mark = _marker()
    title = say("title") + (f" [{trace.label}]" if trace.label else "") + f": {trace.model_class}"
    lines = [title, "=" * len(title)]
    if not trace.complete:
        lines.append(say("raised", error=trace.error))
    if diagnosis.steps:
        lines.append(say("steps", count=len(diagnosis.steps)))

    eval_mode = next((f.modules for f in diagnosis.findings if f.code == "eval-mode"), ())
    for number, (name, verdict, evidence) in enumerate(_steps(trace, facts, codes, say, eval_mode), 1):
        lines.append(f"{mark(verdict)} {say('step', n=number)}  {name}")
        lines.extend(f"         {line}" for line in evidence)

    errors = [f for f in diagnosis.findings if f.severity == Severity.ERROR.value]
    lines.append("")
    if errors:
        root = errors[0]
        message, fix = root.text(lang)
        lines.append(f"{say('root')}: {root.code}" + (f"  ({root.location})" if root.location else ""))
        if root.adapters:
            lines.append("  " + say("adapters", names=", ".join(root.adapters)))
        lines.extend(_indent(message))
        if root.modules and not any(short_name(m) in message for m in root.modules):
            lines.extend(_indent(say("modules", names=listing(root.modules, 4)[say.lang])))
        lines.extend(_indent(say("fix") + fix))
        if root.stack:
            lines.append("  " + say("stack"))
            lines.extend(f"    {frame}" for frame in root.stack[-5:])
    else:
        lines.append(say("none") if facts.got_grad is not None else say("unknown"))
    others = [f for f in diagnosis.findings if not errors or f is not errors[0]]
    if others:
        lines += ["", say("also")]
        for finding in others:
            message, fix = finding.text(lang)
            where = f" ({finding.location})" if finding.location else ""
            lines.append(f"{mark(_verdict_of(finding.severity))} {finding.code}{where}")
            if finding.adapters:
                lines.append("         " + say("adapters", names=", ".join(finding.adapters)))
            lines.extend(_indent(message, 9))
            if finding.severity != Severity.INFO.value:
                lines.extend(_indent(say("fix") + fix, 9))
    if trace.notes:
        lines.append("")
        lines.extend(say("note") + (MESSAGES[note][lang] if note in MESSAGES else note) for note in trace.notes)
    text = printable("\n".join(lines))  # names and messages are data: no terminal control gets through
    return _colour(text) if color else text


def _colour(text: str) -> str:
    """The verdict markers at line starts, coloured (added after the text was made printable)."""
    coloured = {f"[{v:^4s}]": f"\x1b[{code}m[{v:^4s}]\x1b[0m" for v, code in _COLORS.items()}
    lines = []
    for line in text.split("\n"):
        head = line[:6]
        lines.append(coloured[head] + line[6:] if head in coloured else line)
    return "\n".join(lines)


def _configs(peft_configs: dict[str, Any], say: _Say) -> str:
    """Each adapter with its tuner and rank, e.g. "default (LORA, r=8)", placed when the PEFT model is nested."""
    shown = []
    for path, adapters in peft_configs.items():
        for adapter, config in (adapters or {}).items():
            config = config if isinstance(config, dict) else {}
            kind = ", ".join(str(x) for x in (config.get("peft_type"), config.get("r") and f"r={config['r']}") if x)
            where = f" @ {short_name(path)}" if short_name(path) else ""
            shown.append(f"{adapter} ({kind}){where}" if kind else f"{adapter}{where}")
    return ", ".join(shown)


def _steps(trace: Any, facts: Facts, codes: set[str], say: _Say, eval_mode: tuple[str, ...]
           ) -> list[tuple[str, str, list[str]]]:
    sites = trace.sites
    steps = []
    references = facts.timeline.reference_adapters
    adapters = sorted({a for s in sites for state in facts.timeline.states(s) for a in state.active} - set(references))
    step1 = [say("s1.configs", configs=_configs(trace.peft_configs, say) or "-"),
             say("s1.layers", layers=len(sites), adapters=", ".join(adapters) or "-")]
    if references:
        step1.append(say("s1.references", adapters=", ".join(references)))
    bad1 = codes & {"adapter-missing", "adapter-inactive", "no-lora-params"}
    steps.append((say("s1"), "FAIL" if bad1 else "ok", step1))

    by_region = Counter(s.region for s in sites for _ in s.params)
    step2 = [say("s2.total", count=sum(by_region.values()))]
    step2 += [f"{count:6d}  {short_name(region)}" for region, count in sorted(by_region.items())]
    steps.append((say("s2"), "ok" if by_region else "FAIL", step2))

    total = sum(len(s.params) for s in sites)
    step3 = [say("s3.count", trainable=len(facts.trainable), total=total)]
    if facts.timeline.frozen_during_step:
        step3.append(say("s3.end", frozen=len(facts.timeline.frozen_during_step)))
    none_trainable = total > 0 and not facts.trainable
    bad3 = "lora-frozen" in codes or facts.timeline.frozen_during_step or none_trainable
    steps.append((say("s3"), "FAIL" if bad3 else "ok", step3))

    eval_names = ", ".join(say.model(m) for m in eval_mode)
    step4 = [say("s4.eval", modules=eval_names)] if eval_mode else [say("s4.ok")]
    steps.append((say("s4"), "warn" if eval_mode else "ok", step4))

    ran_grad = {m for m, calls in facts.calls.items() if any(c.grad_enabled for c in calls)}
    ran_off = {m for m, calls in facts.calls.items() if m not in ran_grad}
    never = len(sites) - len(ran_grad) - len(ran_off)
    step5 = [say("s5.count", grad=len(ran_grad), off=len(ran_off), never=never)]
    # A detach or an off-path loss cuts after the LoRA layers ran with grad: that is step 6's failure, not 5's.
    bad5 = codes & {"grad-disabled", "lora-bypassed", "checkpoint-no-grad"}
    steps.append((say("s5"), "FAIL" if bad5 or not ran_grad else "ok", step5))

    if facts.got_grad is None and facts.starved:  # no backward: the step raised, or stepped without one
        off, stepped = facts.starved & facts.ran_grad_off_only, facts.starved - facts.ran_grad_off_only
        step6 = []
        if off:
            step6.append(say("s6.grad-off-only", count=len(off)))
        if stepped:
            step6.append(say("s6.stepped-without-grad", count=len(stepped)))
        steps.append((say("s6"), "FAIL", step6))
    elif facts.got_grad is None:
        steps.append((say("s6"), "n/a", [say("s6.unknown")]))
    else:
        arrivals = {a.param: a for a in trace.arrivals}
        zero = sum(1 for p in facts.got_grad if arrivals.get(p) and arrivals[p].zero)
        step6 = [say("s6.count", got=len(facts.got_grad & facts.trainable), trainable=len(facts.trainable),
                                        zero=zero, none=len(facts.starved))]
        if facts.skipped:
            step6.append(say("s6.skipped", count=len(facts.skipped)))
        unjudged = facts.trainable - facts.got_grad - facts.starved - facts.skipped
        if facts.backward_interrupted and unjudged:  # not "got none": the raise stopped the backward first
            step6.append(say("s6.interrupted", count=len(unjudged)))
        if len(trace.micro_steps) > 1:
            step6.append(_micro_steps(trace, facts, say))
        if not trace.backward:
            step6.append(say("s6.walk"))
        nothing_learns = not facts.trainable or codes & {"grad-zero", "nonfinite-grad"}
        unsure = {p for m in facts.unsure_skips for p in facts.sites[m].trainable_params}
        verdict = "FAIL" if facts.starved - unsure or nothing_learns else "warn" if facts.starved else "ok"
        steps.append((say("s6"), verdict, step6))

    run = set(trace.regions_run)
    step7 = [say("s7.run", regions=", ".join(short_name(r) for r in facts.traversed_regions) or "-")]
    for region in sorted({s.region for s in sites}):
        layers = [s for s in sites if s.region == region]
        reached = sum(1 for s in layers if s.module in ran_grad)
        state = say("traversed" if region in run else "not-traversed")
        step7.append(say("s7.region", region=short_name(region), layers=len(layers), state=state,
                                             reached=reached))
    steps.append((say("s7"), "FAIL" if "lora-bypassed" in codes else "ok", step7))
    return steps


def _verdict_of(severity: str) -> str:
    return {"error": "FAIL", "warning": "warn", "info": "info"}[severity]


def _marker() -> Callable[[str], str]:
    return lambda verdict: f"[{verdict:^4s}]"


def _indent(text: str, width: int = 2, limit: int = 108) -> list[str]:
    """The text wrapped to `limit` columns, indented by `width`; long names and paths are never broken."""
    return textwrap.wrap(" ".join(text.split()), limit, initial_indent=" " * width,
                         subsequent_indent=" " * width, break_long_words=False, break_on_hyphens=False)
