"""Very deep graphs: a 20,000-layer LoRA chain is traced and diagnosed without a crash (in a subprocess, so
a crash fails this test instead of killing the suite). It crashed at 10,000 layers while PyTorch freed a
graph lora-trace had walked from Python: every node given a Python object is freed through it,
recursively. Now the walk runs only when no backward ran, and hooks read `requires_grad` / `is_leaf`."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from peft import LoraConfig, get_peft_model
    import lora_trace

    class Chain(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(n))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x.pow(2).mean()

    torch.manual_seed(0)
    model = get_peft_model(Chain(int(sys.argv[1])), LoraConfig(r=1, target_modules=r".*layers\\.\\d+"))
    x = torch.randn(1, 2)
    with lora_trace.trace(model) as tracer:
        model(x).backward()
    assert len(tracer.trace.arrivals) == 2 * int(sys.argv[1]), len(tracer.trace.arrivals)
    model.zero_grad(set_to_none=True)
    diagnosis = lora_trace.diagnose(model, lambda m: m(x))  # deep mode
    print("done", len(diagnosis.trace.calls))
""")


def test_a_20000_layer_lora_chain_is_traced_and_diagnosed():
    result = subprocess.run([sys.executable, "-c", SCRIPT, "20000"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "done 20000" in result.stdout
