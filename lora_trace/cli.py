"""The `lora-trace` command line: argparse over the library; `main(argv) -> int`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .core.errors import LoraTraceError
from .core.printable import json_printable, printable

DESCRIPTION = """Find out why a LoRA adapter does not learn.

In Python, wrap one training step:  with lora_trace.trace(model, optimizer=opt) as t: ...
or call lora_trace.diagnose(model, step). From here: run a script unchanged, read saved runs and adapters."""
EPILOG = """examples:
  lora-trace demo                                  the built-in case: LoRA on an audio tower that gets no gradient
  lora-trace run --out runs -- python train.py     diagnose the first optimizer step of any training script
  lora-trace inspect out/checkpoint-500            which LoRA tensors of a saved adapter never trained
  lora-trace show runs/step-0.json                 the report of a saved run (exit 1 when it has errors)
  lora-trace targets Qwen/Qwen2-Audio-7B-Instruct --target-modules q_proj v_proj

exit codes: 0 healthy / same, 1 LoRA problems found / differs, 2 bad input."""


def _parser() -> argparse.ArgumentParser:
    from . import __version__, saved_adapter
    from .runner import launch

    parser = argparse.ArgumentParser(prog="lora-trace", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lora-trace {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    demo = verbs.add_parser("demo", help="diagnose the built-in motivating case (contrastive Qwen2-Audio)")
    demo.add_argument("--fixed", action="store_true", help="run the fixed configuration instead")
    demo.add_argument("--out", metavar="DIR", help="write the run's artefacts to DIR")
    demo.add_argument("--lang", choices=("en", "zh"), default="en", help="report language")
    show = verbs.add_parser("show", help="print the report of a saved run (exit 1 when it has errors)")
    show.add_argument("run", metavar="RUN.json")
    show.add_argument("--json", action="store_true", help="print the findings as JSON")
    show.add_argument("--lang", choices=("en", "zh"), default="en", help="report language")
    render = verbs.add_parser("render", help="draw the encoding path of a saved run (.svg/.png/.pdf/.dot)")
    render.add_argument("run", metavar="RUN.json")
    render.add_argument("-o", "--output", required=True, metavar="GRAPH")
    render.add_argument("--expand", action="store_true", help="one node per LoRA layer, no collapsed blocks")
    report = verbs.add_parser("report", help="write one self-contained HTML page for a saved run")
    report.add_argument("run", metavar="RUN.json")
    report.add_argument("-o", "--output", required=True, metavar="REPORT.html")
    report.add_argument("--lang", choices=("en", "zh"), default="en")
    report.add_argument("--expand", action="store_true")
    diff = verbs.add_parser("diff", help="compare two saved runs, or a distributed run's ranks (exit 0: same LoRA "
                            "path, 1: differs)")
    diff.add_argument("a", metavar="A.json")
    diff.add_argument("b", metavar="B.json", nargs="?",
                      help="omitted for a distributed run (ddp-run.json): each rank against rank 0")
    diff.add_argument("--graph", metavar="OUT", help="draw B's path with the layers gained and lost marked")
    diff.add_argument("--json", action="store_true")
    launch.add_parser(verbs)
    saved_adapter.add_parser(verbs)
    targets = verbs.add_parser("targets", help="what target_modules selects, on the model built (on meta) from its "
                               "config: a config.json, a model folder, or a model id in the local HF cache")
    targets.add_argument("config", metavar="CONFIG", help="config.json, a model folder, or a cached model id")
    group = targets.add_mutually_exclusive_group()
    group.add_argument("--target-modules", nargs="+", metavar="NAME", help="list entries (names or suffixes)")
    group.add_argument("--target-regex", metavar="RE", help="one regex, fullmatched against module names")
    targets.add_argument("--target-parameters", nargs="+", metavar="NAME",
                         help="target_parameters entries (parameter names or suffixes, e.g. mlp.experts.down_proj)")
    targets.add_argument("--exclude-modules", metavar="RE")
    targets.add_argument("--use-dora", action="store_true", help="count DoRA's magnitude vector too")
    targets.add_argument("--json", action="store_true")
    return parser


def _show(args: argparse.Namespace) -> int:
    from .core.serialize import load

    diagnosis = load(args.run)
    if args.json:
        print(json_printable(json.dumps(diagnosis.to_dict()["findings"], indent=1, ensure_ascii=False)))
    else:
        print(diagnosis.report(lang=args.lang, color=_color(sys.stdout)))
    return 0 if diagnosis.ok else 1


def _render(args: argparse.Namespace) -> int:
    from .core.serialize import load

    print(f"wrote {load(args.run).render(args.output, expand=args.expand)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .core.serialize import load
    from .present.html import write_html

    print(f"wrote {write_html(load(args.run), args.output, lang=args.lang, expand=args.expand)}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from .analysis.compare import compare
    from .analysis.rank_compare import compare_ranks, is_distributed
    from .core.errors import BadInputError
    from .present.comparison import render_comparison

    if args.b is None or is_distributed(args.a) or is_distributed(args.b):
        if args.b is None and not is_distributed(args.a):
            raise BadInputError(f"{args.a} is a single run: give a second run to compare it with "
                                "(`lora-trace diff A.json B.json`)")
        if args.graph:
            raise BadInputError("--graph draws one run's path: compare two single runs (a rank's own file)")
        ranked = compare_ranks(args.a, args.b)
        print(json_printable(json.dumps(ranked.to_dict(), indent=1)) if args.json else printable(str(ranked)))
        return 0 if ranked.same_path else 1
    result = compare(args.a, args.b)
    print(json_printable(json.dumps(result.to_dict(), indent=1)) if args.json else printable(str(result)))
    if args.graph:
        print(f"wrote {render_comparison(args.a, args.b, args.graph)}", file=sys.stderr)
    return 0 if result.same_path else 1


def _targets(args: argparse.Namespace) -> int:
    from .capture.coverage import coverage, format_coverage, model_from_config
    from .core.errors import BadInputError

    if not (args.target_regex or args.target_modules or args.target_parameters):
        raise BadInputError("give --target-modules, --target-regex or --target-parameters")
    model = model_from_config(args.config)
    result = coverage(model, target_modules=args.target_regex or list(args.target_modules or []) or None,
                      exclude_modules=args.exclude_modules, use_dora=args.use_dora,
                      target_parameters=args.target_parameters)
    print(json.dumps(result.to_dict(), indent=1) if args.json else format_coverage(result, args.config))
    return 0


def _color(stream: object) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # bad arguments (argparse printed why) or --help
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        if args.verb == "demo":
            from .demo import run_demo

            return run_demo(fixed=args.fixed, out=args.out, lang=args.lang, stream=sys.stdout,
                            color=_color(sys.stdout))
        if args.verb == "show":
            return _show(args)
        if args.verb == "targets":
            return _targets(args)
        if args.verb == "diff":
            return _diff(args)
        if args.verb == "render":
            return _render(args)
        if args.verb == "report":
            return _report(args)
        if args.verb == "run":
            from .runner.launch import main as run_main

            return run_main(args)
        if args.verb == "inspect":
            from .saved_adapter import main as inspect_main

            return inspect_main(args)
    except (LoraTraceError, OSError) as error:  # bad input: a plain message; a bug keeps its traceback
        print(printable(f"lora-trace: {error}"), file=sys.stderr)
        return 2
    return 2


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
