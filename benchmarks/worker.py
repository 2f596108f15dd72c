"""One measurement job in a fresh interpreter: `python -m benchmarks.worker JOB OUT.json ARGS_JSON`.

Why a process per job: TorchLens wraps torch's functions process-wide, anomaly mode and allocator caches
are process state too, and peak RSS (ru_maxrss) only ever grows; a fresh process gives each job a clean
start and its own peak. The result (or the error that ended the job) is written as JSON to OUT.json.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any


def _jobs() -> dict[str, Callable[..., dict[str, Any]]]:
    from .compare import compare_job
    from .peer import peer_job
    from .scale import lora_count_job, meta7b_job
    from .watching import watch_job

    return {"compare": compare_job, "meta7b": meta7b_job, "lora_count": lora_count_job, "peer": peer_job,
            "watch": watch_job}


def main(argv: list[str]) -> int:
    job, out, raw = argv
    warnings.filterwarnings("ignore")  # library deprecation chatter; nothing measured depends on it
    try:
        args = json.loads(raw)
        result = _jobs()[job](*args.get("args", []), **args.get("kwargs", {}))
        code = 0
    except Exception as exc:  # noqa: BLE001 - reported in RESULTS.md instead of ending the whole run
        result = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                  "traceback": traceback.format_exc()[-4000:]}
        code = 1
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, default=str)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
