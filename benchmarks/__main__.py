"""`python -m benchmarks [--quick] [--only PART ...] [--rounds N] [--out RESULTS.md] [--render JSON]`.

Runs every job of the plan, one fresh process each, one after another (never two at once: they would
share the 2 cores and slow each other), then writes RESULTS.md and the raw JSON. The full plan takes
about 10 minutes on a 2-core machine (under 15 with a busy neighbour); `--quick` runs every code path
with one or two rounds, for a smoke test, and writes to out/benchmarks/ so that the committed RESULTS.md
keeps the full run's numbers. `--render JSON` rewrites a report from saved numbers without measuring.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import sys
import time
from typing import Any

from . import chain, cli, machine, report
from .runner import EXACT_MALLOC, ROOT, run_job

SECTIONS = ("overhead", "watch", "tools", "peer", "scale", "cli", "chain")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many rounds each part runs. The full plan is sized for about 10 minutes on 2 cores (the limit is 15)."""

    quick: bool = False
    overhead_rounds: int = 20
    tool_rounds: int = 7
    torchlens_rounds: int = 3
    count_layers: tuple[int, ...] = (2, 32, 128)  # narrow(N): 10 * N LoRA modules -> 20, 320, 1280
    count_rounds: int = 3
    meta_repeats: int = 2


QUICK = Plan(quick=True, overhead_rounds=2, tool_rounds=1, torchlens_rounds=1, count_layers=(2, 8), count_rounds=1,
             meta_repeats=1)

# Groups of tools on the same model; each group is one process. TorchLens and anomaly mode change
# process-wide state, and a group's extra peak memory is an upper bound for all its members.
TOOL_GROUPS: tuple[tuple[str, ...], ...] = (
    ("lora_trace", "lora_trace-deep", "lora_trace-diagnose"),
    ("torchviz", "torchviz-svg"),
    ("torchview", "torchview-svg"),
    ("torchlens",),
    ("anomaly",),
)


def _progress(message: str) -> None:
    print(message, flush=True)


def _job(title: str, job: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    _progress(f"  {title} ...")
    result = run_job(job, *args, **kwargs)
    state = f"failed: {result['error']}" if "error" in result else "done"
    _progress(f"  {title}: {state} ({result['wall_s']:.0f} s)")
    return result


def _compare(title: str, model: str, names: list[str], **kwargs: Any) -> dict[str, Any]:
    """Memory in one process (exact malloc), then time in another (default malloc); one merged result."""
    memory = _job(f"{title}: memory", "compare", model, names, mode="memory", env=EXACT_MALLOC,
                  truth=kwargs.pop("truth", False), memory_steps=kwargs.pop("memory_steps", 2))
    result = _job(f"{title}: time", "compare", model, names, mode="time", **kwargs)
    result["names"] = names
    if "error" in memory:
        result.setdefault("errors", {})["memory job"] = memory["error"]
    else:
        result["memory"] = memory["memory"]
        result["init_truth"] = memory.get("init_truth")
        for name, line in memory.get("errors", {}).items():
            result.setdefault("errors", {}).setdefault(name, line)
    result["wall_s"] = result.get("wall_s", 0) + memory.get("wall_s", 0)
    return result


def run(plan: Plan, sections: tuple[str, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {"plan": dataclasses.asdict(plan), "machine": machine.describe()}
    if "overhead" in sections:
        _progress("overhead: plain vs lora_trace default vs deep")
        results["overhead"] = {
            model: _compare(model, model, ["lora_trace", "lora_trace-deep"], rounds=plan.overhead_rounds,
                            warmup=1, profile=True)
            for model in ("medium", "narrow-32")
        }
    if "watch" in sections:
        _progress("watch: a whole training step, watched and not, at three model sizes")
        results["watch"] = {model: _job(f"watch on {model}", "watch", model, rounds=plan.overhead_rounds,
                                        warmup=1 if plan.quick else 2)
                            for model in ("qwen2-16", "medium", "narrow-32")}
    if "tools" in sections:
        _progress("tools: the same step under each tool, on qwen2-16")
        results["tools"] = []
        for group in TOOL_GROUPS:
            slow = group == ("torchlens",)
            results["tools"].append(_compare(
                ", ".join(group), "qwen2-16", list(group), rounds=plan.torchlens_rounds if slow else plan.tool_rounds,
                warmup=0 if slow else 1, truth=group[0] in ("lora_trace", "torchlens"), memory_steps=1 if slow else 2))
    if "peer" in sections:
        _progress("peer: lora_trace and guardtower in the same process on 16 and 320 LoRA modules; then accuracy")
        results["peer"] = {
            model: _compare(f"{model} with guardtower", model, ["lora_trace", "lora_trace-deep", "guardtower"],
                            rounds=plan.tool_rounds, warmup=1)
            for model in ("qwen2-16", "narrow-32")
        }
        results["peer_accuracy"] = _job("accuracy on the project's scenarios", "peer", quick=plan.quick,
                                        timeout_s=900)
    if "scale" in sections:
        _progress("scale: Qwen2-Audio-7B on meta, and diagnose() against the LoRA count")
        results["meta7b"] = _job("qwen2-audio-7b (meta)", "meta7b", repeats=plan.meta_repeats)
        largest = max(plan.count_layers)
        results["lora_counts"] = [
            _job(f"{10 * n} LoRA modules", "lora_count", n, rounds=plan.count_rounds, profile=n == largest)
            for n in plan.count_layers
        ]
    if "cli" in sections:
        _progress("cli: show / diff / render / report on saved runs, each a fresh interpreter")
        results["cli"] = cli.measure_cli(repeats=2 if plan.quick else 7)
    if "chain" in sections:
        _progress("chain: a LoRA chain of 10,000 and 20,000 layers, plain / trace / diagnose, a process each")
        results["chain"] = chain.measure_chain((2000,) if plan.quick else (10000, 20000))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Measure lora-trace: overhead of a "
                                     "traced step, the same step under other tools, scale. Writes RESULTS.md.")
    parser.add_argument("--quick", action="store_true", help="one or two rounds of everything (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run only these parts")
    parser.add_argument("--rounds", type=int, help="rounds of the overhead comparison (default 20; quick 2)")
    parser.add_argument("--tool-rounds", type=int, help="rounds of each tool comparison (default 7; quick 1)")
    parser.add_argument("--out", type=pathlib.Path,
                        help="report path (default benchmarks/RESULTS.md; quick or partial runs: out/benchmarks/)")
    parser.add_argument("--render", type=pathlib.Path, metavar="RESULTS.json",
                        help="write the report from the raw numbers of an earlier run, without measuring")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text(encoding="utf-8"))
        full = not results["plan"]["quick"] and all(k in results for k in ("overhead", "tools", "meta7b"))
        beside = args.render.with_name(args.render.stem.replace("results", "RESULTS") + ".md")
        out = args.out or (ROOT / "benchmarks" / "RESULTS.md" if full else beside)
        out.write_text(report.render(results), encoding="utf-8")
        _progress(f"wrote {out}")
        return 0
    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan = dataclasses.replace(plan, overhead_rounds=args.rounds)
    if args.tool_rounds:
        plan = dataclasses.replace(plan, tool_rounds=args.tool_rounds)
    # only a full run of every part replaces the committed report; a quick or partial one goes to out/
    kind = "quick" if args.quick else "partial" if set(args.only) != set(SECTIONS) else None
    default_out = ROOT / "out" / "benchmarks" / f"RESULTS.{kind}.md" if kind else ROOT / "benchmarks" / "RESULTS.md"
    out: pathlib.Path = args.out or default_out
    json_path = ROOT / "out" / "benchmarks" / (f"results.{kind}.json" if kind else "results.json")

    start = time.perf_counter()
    results = run(plan, tuple(args.only))
    results["wall_s"] = time.perf_counter() - start
    results["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    results["command"] = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]).strip()
    results["json_path"] = str(json_path.relative_to(ROOT)) if json_path.is_relative_to(ROOT) else str(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.render(results), encoding="utf-8")
    _progress(f"wrote {out} and {json_path} in {results['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
