"""Imported at start-up by every Python process that `lora-trace run` starts (this folder is first on its
PYTHONPATH): starts the step finder when LORA_TRACE_RUN says so, then hands over to the sitecustomize this
file shadows, if there is one (the approach of ddtrace-run and coverage's subprocess support)."""

import importlib
import os
import sys


def _start() -> None:
    spec = os.environ.get("LORA_TRACE_RUN")
    if not spec:
        return
    try:
        from lora_trace.runner.child import start
    except ImportError as error:
        print(f"lora-trace run: {sys.executable} cannot import lora_trace ({error}); run the script with the "
              "Python that lora-trace is installed in", file=sys.stderr)
        return
    start(spec)


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    mine = sys.modules.pop("sitecustomize", None)
    path = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        if mine is not None:
            sys.modules["sitecustomize"] = mine
    finally:
        sys.path[:] = path


_chain()  # first: the sitecustomize this one shadows may set what torch reads at import (OMP_NUM_THREADS)
_start()
