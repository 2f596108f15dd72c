"""target_modules entries that match nothing (a glob where PEFT wants a suffix or a regex, old names)."""

from __future__ import annotations

from ..findings import Code, Finding, Severity
from ..regions import region_of, short_name
from .facts import Facts


def check_targets(facts: Facts) -> list[Finding]:
    findings = []
    by_adapter: dict[tuple[str, str], list] = {}
    for row in facts.trace.targets:
        by_adapter.setdefault((row.peft_model, row.adapter), []).append(row)
    for (prefix, adapter), rows in sorted(by_adapter.items()):
        empty = [r for r in rows if not r.matched]
        if not empty:
            continue
        nothing = all(not r.matched for r in rows)
        table = "; ".join(f"{r.entry!r} -> {len(r.matched)}" for r in rows)
        notes = [f"{r.entry!r}: {r.note}." for r in empty if r.note]
        message = (f"{len(empty)} target_modules entr{'y' if len(empty) == 1 else 'ies'} of adapter {adapter!r} in "
                   f"{short_name(prefix) or 'the model'} matched no module ({table})."
                   + (" Nothing matched at all." if nothing else " PEFT silently ignores them beside valid ones.")
                   + ("" if not notes else " " + " ".join(notes)))
        proposals = [r.proposal for r in empty if r.proposal]
        fix = ("Use PEFT's forms: a list of exact names or name suffixes (`q_proj`), or one regex string that "
               "is fullmatched against the whole module name")
        if proposals:
            fix += (f'. This regex keeps your other entries and does what the pattern meant; lora-trace checked it '
                    f'with PEFT\'s matching: target_modules=r"{proposals[0]}".')
        else:
            fix += "; `lora-trace targets` shows what each entry matches."
        matched_regions = sorted({region_of(m) for r in rows for m in r.matched})
        findings.append(Finding(
            Code.TARGET_UNMATCHED.value, (Severity.ERROR if nothing else Severity.WARNING).value, message, fix,
            (), tuple(matched_regions),
            evidence={"entries": {r.entry: len(r.matched) for r in rows}, "peft_model": prefix, "adapter": adapter},
        ))
    return findings
