"""`lora-trace run [--steps K] [--deep] [--out DIR] -- COMMAND...`: run COMMAND unchanged with tracing started in
its Python processes, then read the runs they saved and print the verdict.

Exit code: the script's own when it failed (a crash keeps its code; the diagnosis is written all the same);
otherwise as `show`: 0 no error finding, 1 error findings (or no adapter was ever seen), 2 bad input.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

from ..analysis.distributed import DistributedDiagnosis, unused_findings
from ..analysis.steps import judge_steps
from ..core.errors import BadInputError, LoraTraceError
from ..core.printable import printable
from ..core.serialize import load

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")
MARKER = ".lora-trace-run"  # in a folder `run` writes to: only such a folder's runs are ever removed
_OURS = re.compile(r"^(step-\d+(\.model-\d+)?\.(json|svg)|run\.json|gathered\.json)$")


def add_parser(verbs: argparse._SubParsersAction) -> None:
    run = verbs.add_parser(
        "run", help="run a training script unchanged and diagnose its first optimizer steps "
        "(exit: the script's code if it failed, else 0 healthy / 1 LoRA problems)",
        description="Run COMMAND (python train.py ..., torchrun ...) unchanged. In every "
        "Python process it starts, PyTorch's global module and optimizer hooks find the training steps; the first "
        "K are traced, saved under --out (one folder per rank under torchrun) and reported here.")
    run.add_argument("--steps", type=int, default=1, metavar="K", help="optimizer steps to trace (default 1)")
    run.add_argument("--deep", action="store_true", help="deep mode: name the line that cuts a path (costs more)")
    run.add_argument("--out", default="lora-trace-run", metavar="DIR", help="where runs go (default lora-trace-run)")
    run.add_argument("--no-render", action="store_true", help="skip the SVG graph of each step")
    run.add_argument("--lang", choices=("en", "zh"), default="en", help="report language")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run")


def main(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise BadInputError("give the command to run after --, e.g. lora-trace run -- python train.py --epochs 1")
    if args.steps < 1:
        raise BadInputError(f"--steps takes a positive number of optimizer steps, got {args.steps}")
    out = os.path.abspath(args.out)
    _clear(out)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, MARKER), "w", encoding="utf-8") as handle:
        handle.write("runs of `lora-trace run`: the next run into this folder replaces them\n")
    env = dict(os.environ)
    env["LORA_TRACE_RUN"] = json.dumps({"out": out, "steps": args.steps, "deep": args.deep,
                                        "render": not args.no_render})
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP, *filter(None, [env.get("PYTHONPATH")])])
    try:
        child = subprocess.Popen(command, env=env)
    except FileNotFoundError:
        raise BadInputError(f"cannot run {command[0]!r}: no such program") from None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the script (same process group):
    try:  # let it end, and save the step it was in, instead of killing it from here
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    code = 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
    try:
        return _verdict(out, code, args.lang)
    except LoraTraceError:
        if code:
            return code  # the script failed: its own code, even when a run it left cannot be read
        raise


def _clear(out: str) -> None:
    """Remove the runs an earlier `lora-trace run` left in `out`, so none is read twice: only in a folder it
    marked as its own, and only its own file names; a folder holding such names without the mark is refused."""
    folders = [out, *glob.glob(os.path.join(out, "rank-*"))]
    ours = [os.path.join(f, n) for f in folders if os.path.isdir(f) for n in os.listdir(f) if _OURS.match(n)]
    if not ours:
        return
    if not os.path.exists(os.path.join(out, MARKER)):
        raise BadInputError(f"{out} holds runs lora-trace run did not write there ({os.path.basename(ours[0])}); "
                            "choose another --out")
    for path in ours:
        os.remove(path)
    for folder in folders[1:]:
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def _models_in(folder: str) -> list[list[Any]]:
    """The saved steps of each model traced in `folder`: step-N.json is model 0, step-N.model-K.json model K."""
    found: dict[int, dict[int, str]] = {}
    for path in glob.glob(os.path.join(folder, "step-*.json")):
        match = re.search(r"step-(\d+)(?:\.model-(\d+))?\.json$", path)
        if match:
            found.setdefault(int(match[2] or 0), {})[int(match[1])] = path
    return [[load(steps[n]) for n in sorted(steps)] for _, steps in sorted(found.items())]


def _verdict(out: str, code: int, lang: str) -> int:
    ranks = sorted(glob.glob(os.path.join(out, "rank-*")), key=lambda p: int(p.rsplit("-", 1)[-1]))
    per_rank = [_models_in(folder) for folder in ranks] if ranks else [_models_in(out)]
    silent = [os.path.basename(f) for f, models in zip(ranks, per_rank, strict=False) if not models]
    if silent and len(silent) < len(ranks):  # the gathered view numbers ranks by position: gather all or none
        print(printable(f"\nlora-trace run: {', '.join(silent)} saved no run; each rank is reported alone"),
              file=sys.stderr)
        per_rank = [models for models in per_rank if models]
        for folder, models in zip([f for f in ranks if os.path.basename(f) not in silent], per_rank, strict=True):
            for diagnosis in (judge_steps(steps) for steps in models):
                print(printable(f"\n{os.path.basename(folder)}:\n" + diagnosis.report(lang=lang)))
        ok = all(judge_steps(steps).ok for models in per_rank for steps in models)
        return code or (0 if ok else 1)
    per_rank = [models for models in per_rank if models]
    if not per_rank:
        print(printable(f"\nlora-trace run: no training step was traced: no forward ran through a module holding "
                        f"PEFT adapter layers{' before the script failed' if code else ''}. Was get_peft_model "
                        "applied to the model that trains, in a Python process started by this command?"),
              file=sys.stderr)
        return code or 1
    judged = [[judge_steps(steps) for steps in models] for models in per_rank]  # [rank][model]
    ok = all(d.ok for models in judged for d in models)
    if len(judged) == 1:
        models = judged[0]
        if any(len(steps) > 1 for steps in per_rank[0]):
            models[0].save(os.path.join(out, "run.json"))
        for index, diagnosis in enumerate(models):
            name = diagnosis.trace.model_class
            title = "\n" if len(models) == 1 else f"\nModel {index + 1} of {len(models)} ({name}):\n"
            print(printable(title + diagnosis.report(lang=lang)))
    else:
        firsts = tuple(models[0] for models in judged)
        gathered = DistributedDiagnosis(firsts, unused_findings(firsts))
        gathered.save(os.path.join(out, "gathered.json"))
        print(printable("\n" + gathered.report(lang=lang)))
        ok = ok and gathered.ok
        for rank, models in enumerate(judged):  # rank 0's first model is in the gathered report
            for index, diagnosis in enumerate(models):
                if not diagnosis.ok and (rank, index) != (0, 0):
                    print(printable(f"\nRank {rank}, model {index + 1}:\n" + diagnosis.report(lang=lang)))
    print(printable(f"\nlora-trace run: runs saved under {out}"), file=sys.stderr)
    if code:
        return code
    return 0 if ok else 1
