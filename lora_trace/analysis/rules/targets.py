"""target_modules / target_parameters entries that match nothing (a glob where PEFT wants a suffix or a
regex, old names, a typo), with near misses that PEFT's matching confirmed.

"Nothing matched at all" (an error) means no entry of the adapter, target_modules and target_parameters
together, selected anything: the adapter adapts nothing. An entry that matches nothing beside entries of
either kind that do is a warning: PEFT trains what the others select and only warns (or stays silent).
"""

from __future__ import annotations

from ...core.findings import Code, Finding, Severity, make_finding
from ...core.messages import Texts, join, listing, literal, series, text
from ...core.regions import region_of, short_name
from ..facts import Facts


def _either(items: tuple[str, ...]) -> Texts:
    """`'a' or 'b'` in each language."""
    parts: list[Texts] = []
    for item in items:
        if parts:
            parts.append(text("target-unmatched.or"))
        parts.append(literal(repr(item)))
    return join(*parts)


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
        kinds = {r.kind == "parameter" for r in empty}
        key = "target-unmatched" if kinds == {False} else "target-unmatched.parameters" if kinds == {True} \
            else "target-unmatched.mixed"
        table = series(*[text("target-unmatched.row", entry=r.entry, count=len(r.matched)) for r in rows])
        near = [r for r in empty if r.corrected]
        message = join(
            text(key, count=len(empty), adapter=adapter, table=table, model=short_name(prefix) or text("model.whole")),
            text("target-unmatched.all" if nothing else "target-unmatched.some"),
            *[text("target-unmatched.glob", entry=repr(r.entry)) for r in empty if r.note],
            *[text("target-unmatched.near", entry=repr(r.entry), names=listing(r.meant, 3), count=len(r.meant),
                   corrected=_either(r.corrected)) for r in near],
        )
        proposals = [r.proposal for r in empty if r.proposal]
        tails = [text("target-unmatched.fix.regex", regex=proposals[0])] if proposals else []
        if near:
            replacements = series(*[text("target-unmatched.replace", entry=repr(r.entry),
                                         corrected=_either(r.corrected)) for r in near])
            tails.append(text("target-unmatched.fix.near.also" if tails else "target-unmatched.fix.near",
                              replacements=replacements))
        evidence = {"entries": {r.entry: len(r.matched) for r in rows}, "peft_model": prefix, "adapter": adapter}
        if near:
            evidence["suggestions"] = {r.entry: list(r.corrected) for r in near}
        findings.append(make_finding(
            Code.TARGET_UNMATCHED, Severity.ERROR if nothing else Severity.WARNING, message,
            join(text("target-unmatched.fix"), *(tails or [text("target-unmatched.fix.cli")])),
            modules=tuple(sorted({m for r in empty for m in r.meant})),
            regions=tuple(sorted({region_of(m) for r in rows for m in r.matched})),
            evidence=evidence,
        ))
    return findings
