"""The `lora-trace` command line: argparse over the library; `main(argv) -> int`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .errors import LoraTraceError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-trace", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    demo = verbs.add_parser("demo", help="diagnose the built-in motivating case (contrastive Qwen2-Audio)")
    demo.add_argument("--fixed", action="store_true", help="run the fixed configuration instead")
    demo.add_argument("--out", metavar="DIR", help="write the run's artefacts to DIR")
    return parser


def _color(stream: object) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "demo":
            from .demo import run_demo

            return run_demo(fixed=args.fixed, out=args.out, stream=sys.stdout, color=_color(sys.stdout))
    except LoraTraceError as error:
        print(f"lora-trace: {error}", file=sys.stderr)
        return 2
    return 2


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
