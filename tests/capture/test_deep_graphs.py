"""Very deep graphs: a 20,000-layer LoRA chain is traced and diagnosed without a crash (each in a
subprocess, so a crash fails this test instead of killing the suite). It crashed at 10,000 layers while
PyTorch freed a graph lora-trace had walked from Python: every node given a Python object is freed
through it, recursively. Now the walk runs only when no backward ran, and hooks read `requires_grad` /
`is_leaf`. The chain is the benchmark's (`benchmarks/chain.py`), which also records time and memory."""

import subprocess
import sys

import pytest

from benchmarks.chain import SCRIPT


@pytest.mark.parametrize("mode", ["trace", "diagnose"])
def test_a_20000_layer_lora_chain_is_traced_and_diagnosed(mode):
    result = subprocess.run([sys.executable, "-c", SCRIPT, "20000", mode], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    seconds, peak_mb = (float(v) for v in result.stdout.split()[-2:])
    assert seconds > 0 and peak_mb > 0
