"""The issue's targets, judged on the numbers of one run: PASS or FAIL with the measured value, never a guess.

Time targets use the median of per-round ratios (traced / plain in the same round). "Cheaper than
TorchLens" compares ratios to each process's own plain step, so no two processes' clocks are mixed.
Memory targets compare the tracer's extra peak RSS with the plain step's working set (its peak minus the
RSS of the built model before any step): the share of the step's own memory, not of the whole process,
which would hide a second copy of the activations behind the ~0.5 GB that torch and transformers take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    status: str  # "PASS" | "FAIL" | "not measured"
    why: list[str] = field(default_factory=list)  # for a FAIL: where the cost goes

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def robust_ratio(entry: dict[str, Any]) -> tuple[float, str]:
    """The figure a target is judged on: the worse of the median of per-round ratios and the ratio of
    medians, and a note when the two differ by more than 10% (rounds hit unevenly by outside load, or a
    variant whose cost drifts over the rounds: the figure is then not to be trusted, whichever is lower)."""
    pairs, medians = entry["median_pair_ratio"], entry["ratio_of_medians"]
    note = "" if abs(pairs - medians) <= 0.10 * min(pairs, medians) else (
        f"; the statistics disagree ({pairs:.2f}x per-round median, {medians:.2f}x ratio of medians): rerun")
    return max(pairs, medians), note


def _variant(results: dict[str, Any], model: str, name: str) -> dict[str, Any] | None:
    job = results.get("overhead", {}).get(model)
    if not job or "variants" not in job:
        return None
    return job["variants"].get(name)


def _tool(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    for job in results.get("tools", []):
        if name in job.get("variants", {}):
            return job["variants"][name]
    return None


def _missing(name: str, goal: str) -> Target:
    return Target(name, goal, "not measured in this run", "not measured")


def _overhead_target(results: dict[str, Any], model: str, variant: str, limit: float, title: str) -> Target:
    goal = f"<= {limit:.2f}x a plain step"
    entry = _variant(results, model, variant)
    if entry is None:
        return _missing(title, goal)
    ratio, note = robust_ratio(entry)
    target = Target(title, goal, f"{ratio:.2f}x ({entry['median_s']:.3f} s vs {_plain(results, model):.3f} s)"
                    f"{note}", _status(ratio <= limit))
    if target.failed:
        target.why = explain_overhead(results, model, variant)
    return target


def _plain(results: dict[str, Any], model: str) -> float:
    plain = _variant(results, model, "plain")
    return plain["median_s"] if plain else float("nan")


def explain_overhead(results: dict[str, Any], model: str, variant: str) -> list[str]:
    """Where a traced step's extra time goes: the phases of the `with` block, then the profile."""
    entry = _variant(results, model, variant) or {}
    details = entry.get("details", {})
    plain = _plain(results, model)
    lines = []
    if details:
        extra = entry["median_s"] - plain
        lines.append(
            f"phases (medians): entering the block {details.get('enter_s', 0):.3f} s, the step inside it "
            f"{details.get('inside_s', 0):.3f} s (plain step {plain:.3f} s), leaving it (building the trace) "
            f"{details.get('exit_s', 0):.3f} s; extra over plain {extra:.3f} s. Reading .diagnosis afterwards "
            f"(not in the ratio): {details.get('diagnosis_s', 0):.3f} s."
        )
    profile = results.get("overhead", {}).get(model, {}).get("profiles", {}).get(variant)
    if profile:
        lines.append(f"cProfile of one traced step and its .diagnosis ({profile['total_s']:.2f} s under the "
                     "profiler, which inflates per-call costs), lora_trace's functions by cumulative time:")
        lines.extend(_rows(profile["by_cumulative"][:8]))
        lines.append("and by own time (the hot spots themselves):")
        lines.extend(_rows(profile["by_own"][:6]))
    return lines


def _rows(rows: list[dict[str, Any]]) -> list[str]:
    return [f"  {row['cumulative_s']:.3f} s cumulative, {row['own_s']:.3f} s own, {row['calls']} calls: "
            f"{row['function']}" for row in rows]


def _memory_target(results: dict[str, Any], variant: str, title: str) -> Target:
    goal = "< 5% of a plain step's working set"
    worst = None
    for model, job in results.get("overhead", {}).items():
        memory = job.get("memory") if isinstance(job, dict) else None
        if not memory or variant not in memory.get("extra_peak_mb", {}):
            continue
        share = memory["extra_peak_mb"][variant] / max(memory["plain_working_set_mb"], 1e-9)
        if worst is None or share > worst[0]:
            worst = (share, model, memory["extra_peak_mb"][variant], memory["plain_working_set_mb"],
                     memory.get("kept_alive", {}).get(variant))
    if worst is None:
        return _missing(title, goal)
    share, model, extra, working, kept = worst
    target = Target(title, goal, f"{100 * share:.1f}% (worst model: {model}, +{extra:.1f} MiB over "
                    f"{working:.0f} MiB)", _status(share < 0.05))
    if target.failed:
        target.why = [f"peak RSS after the traced steps exceeded the plain steps' peak by {extra:.1f} MiB on {model}."]
        if kept and kept[0]:
            target.why.append(
                f"{kept[0]} of {kept[1]} finished tracers were still alive after the benchmark dropped its last "
                "reference to them: a reference cycle keeps each one, and what it holds, until Python's cyclic "
                "garbage collector runs, so the next traced step runs on top of the previous one's leftovers.")
    return target


def evaluate(results: dict[str, Any]) -> list[Target]:
    targets = [
        # the goals of issue 16 ("cheap enough to leave on"); deep on "medium" keeps the first version's
        _overhead_target(results, "medium", "lora_trace", 1.03, "default trace on \"medium\""),
        _overhead_target(results, "narrow-32", "lora_trace", 1.10, "default trace on the 320-LoRA model"),
        _overhead_target(results, "medium", "lora_trace-deep", 1.50, "deep trace on \"medium\""),
        _overhead_target(results, "narrow-32", "lora_trace-deep", 1.35, "deep trace on the 320-LoRA model"),
    ]
    watch = results.get("watch", {}).get("narrow-32")
    goal = "<= 1.02x a plain training step"
    if watch and "variants" in watch:
        ratio, note = robust_ratio(watch["variants"]["lora_trace-watch"])
        targets.append(Target("watch per step, 320-LoRA model", goal, f"{ratio:.3f}x{note}", _status(ratio <= 1.02)))
    else:
        targets.append(_missing("watch per step, 320-LoRA model", goal))
    torchlens, deep = _tool(results, "torchlens"), _tool(results, "lora_trace-deep")
    goal = ">= 5x cheaper than TorchLens (deep mode, qwen2-16)"
    if torchlens and deep:
        lens, ours = torchlens["median_pair_ratio"], deep["median_pair_ratio"]
        measured = f"{lens / ours:.1f}x (TorchLens {lens:.2f}x a plain step, lora_trace deep {ours:.2f}x)"
        targets.append(Target("cheaper than TorchLens", goal, measured, _status(lens / ours >= 5)))
    else:
        targets.append(_missing("cheaper than TorchLens", goal))
    targets.append(_memory_target(results, "lora_trace", "tracer memory, default trace"))
    targets.append(_memory_target(results, "lora_trace-deep", "tracer memory, deep trace"))
    meta = results.get("meta7b")
    if meta and "diagnose_s" in meta:
        first = meta["diagnose_s"][0]
        targets.append(Target("meta Qwen2-Audio-7B diagnose, time", "< 30 s", f"{first:.1f} s (first call)",
                              _status(first < 30)))
        peak = meta["peak_rss_mb"] / 1024
        targets.append(Target("meta Qwen2-Audio-7B diagnose, memory", "< 2 GB peak RSS",
                              f"{peak:.2f} GiB (whole process: imports, build, diagnose)", _status(peak < 2)))
    else:
        targets.append(_missing("meta Qwen2-Audio-7B diagnose, time", "< 30 s"))
        targets.append(_missing("meta Qwen2-Audio-7B diagnose, memory", "< 2 GB peak RSS"))
    targets.append(_linear_target(results))
    targets.append(_cli_target(results))
    targets += _peer_targets(results)
    return targets


def _peer_targets(results: dict[str, Any]) -> list[Target]:
    """Ahead of guardtower on overhead (same process, both models), causes named and false alarms."""
    targets = []
    for model, title in (("qwen2-16", "16 LoRA"), ("narrow-32", "320 LoRA")):
        goal = "lora_trace default cheaper than guardtower"
        variants = results.get("peer", {}).get(model, {}).get("variants", {})
        if "lora_trace" not in variants or "guardtower" not in variants:
            targets.append(_missing(f"overhead beside guardtower, {title}", goal))
            continue
        ours, theirs = variants["lora_trace"]["median_pair_ratio"], variants["guardtower"]["median_pair_ratio"]
        targets.append(Target(f"overhead beside guardtower, {title}", goal,
                              f"{ours:.2f}x vs {theirs:.2f}x a plain step", _status(ours < theirs)))
    accuracy = results.get("peer_accuracy") or {}
    goal = "more causes named, no more false alarms than guardtower"
    if "rows" not in accuracy:
        return targets + [_missing("accuracy beside guardtower", goal)]
    from .peer import tally

    ours, theirs = tally(accuracy["rows"], "lora_trace"), tally(accuracy["rows"], "guardtower")
    measured = (f"named {ours['named']} vs {theirs['named']} of {ours['faulty']}; false alarms {ours['false_alarms']} "
                f"vs {theirs['false_alarms']} of {ours['healthy']}")
    ok = ours["named"] > theirs["named"] and ours["false_alarms"] <= theirs["false_alarms"]
    return targets + [Target("accuracy beside guardtower", goal, measured, _status(ok))]


def _cli_target(results: dict[str, Any]) -> Target:
    """Reading a saved run needs no torch: every verb under 0.5 s, none importing torch."""
    goal = "< 0.5 s per verb, no torch imported"
    job = results.get("cli")
    if not job:
        return _missing("show / diff / render / report", goal)
    slowest = max(job["verbs"].items(), key=lambda item: item[1]["median_s"])
    torch_users = [verb for verb, v in job["verbs"].items() if v["torch_imported"]]
    measured = (f"slowest: {slowest[0]} {slowest[1]['median_s']:.3f} s; "
                f"torch imported by: {', '.join(torch_users) or 'none'}")
    return Target("show / diff / render / report", goal, measured,
                  _status(slowest[1]["median_s"] < 0.5 and not torch_users))


def _linear_target(results: dict[str, Any]) -> Target:
    goal = "added ms per LoRA module at the largest count <= 1.2x that at 320"
    counts = [c for c in results.get("lora_counts", []) if "added_per_lora_ms" in c]
    if len(counts) < 2:
        return _missing("linear growth of diagnose()", goal)
    counts.sort(key=lambda c: c["lora_modules"])
    reference = next((c for c in counts if c["lora_modules"] == 320), counts[-2])
    largest = counts[-1]
    growth = largest["added_per_lora_ms"] / max(reference["added_per_lora_ms"], 1e-9)
    target = Target("linear growth of diagnose()", goal.replace("320", str(reference["lora_modules"])),
                    f"{growth:.2f}x ({reference['added_per_lora_ms']:.2f} ms at {reference['lora_modules']}, "
                    f"{largest['added_per_lora_ms']:.2f} ms at {largest['lora_modules']})", _status(growth <= 1.2))
    if target.failed and largest.get("profile"):
        profile = largest["profile"]
        target.why = [f"cProfile of one diagnose() at {largest['lora_modules']} LoRA modules "
                      f"({profile['total_s']:.2f} s under the profiler), lora_trace's functions by cumulative time:"]
        target.why.extend(_rows(profile["by_cumulative"][:8]))
        target.why.append("and by own time:")
        target.why.extend(_rows(profile["by_own"][:6]))
    return target
