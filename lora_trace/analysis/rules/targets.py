"""target_modules entries that match nothing (a glob where PEFT wants a suffix or a regex, old names)."""

from __future__ import annotations

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import join, text
from ...core.regions import region_of, short_name
from ..facts import Facts


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
        message = join(
            text("target-unmatched", count=len(empty), adapter=adapter, table=table,
                 model=short_name(prefix) or text("model.whole")),
            text("target-unmatched.all" if nothing else "target-unmatched.some"),
            *[text("target-unmatched.glob", entry=repr(r.entry)) for r in empty if r.note],
        )
        proposals = [r.proposal for r in empty if r.proposal]
        tail = text("target-unmatched.fix.regex", regex=proposals[0]) if proposals else text("target-unmatched.fix.cli")
        findings.append(make_finding(
            Code.TARGET_UNMATCHED, Severity.ERROR if nothing else Severity.WARNING, message,
            join(text("target-unmatched.fix"), tail),
            regions=tuple(sorted({region_of(m) for r in rows for m in r.matched})),
            evidence={"entries": {r.entry: len(r.matched) for r in rows}, "peft_model": prefix, "adapter": adapter},
        ))
    return findings
