"""Very deep graphs: a chain of N single-LoRA Linear layers, a plain step, a default trace and a dry run,
each in a fresh interpreter (a crash there is a result, not the end of the run): wall time and peak RSS."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

from .runner import ROOT

SCRIPT = textwrap.dedent("""
    import resource, sys, time, torch
    from torch import nn
    from peft import LoraConfig, get_peft_model
    import lora_trace

    torch.set_num_threads(1)
    n, mode = int(sys.argv[1]), sys.argv[2]

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(n))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x.pow(2).mean()

    torch.manual_seed(0)
    model = get_peft_model(Chain(), LoraConfig(r=1, target_modules=r".*layers\\.\\d+"))
    x = torch.randn(1, 2)
    start = time.perf_counter()
    if mode == "plain":
        model(x).backward()
    elif mode == "trace":
        with lora_trace.trace(model) as tracer:
            model(x).backward()
        tracer.diagnosis
    else:
        lora_trace.diagnose(model, lambda m: m(x))
    print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
""")


def measure_chain(lengths: tuple[int, ...] = (10000, 20000)) -> dict[str, Any]:
    rows = []
    for n in lengths:
        for mode in ("plain", "trace", "diagnose"):
            done = subprocess.run([sys.executable, "-c", SCRIPT, str(n), mode], cwd=ROOT, capture_output=True,
                                  text=True, timeout=900)
            if done.returncode == 0:
                seconds, peak = (float(v) for v in done.stdout.split()[-2:])
                rows.append({"layers": n, "mode": mode, "seconds": seconds, "peak_rss_mb": peak})
            else:
                rows.append({"layers": n, "mode": mode, "error": f"exit {done.returncode}"})
    return {"rows": rows}
