"""A model and optimizer passed through accelerate's prepare(), and a torch.compile'd model."""

import warnings

import pytest
import torch

import lora_trace
from lora_trace.scenarios.causal_lm import causal_lm


def test_accelerate_prepared_model_and_optimizer():
    from accelerate import Accelerator

    scenario = causal_lm(fault="lr-zero")
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(scenario.model, scenario.optimizer)
    with lora_trace.trace(model, optimizer=optimizer) as tracer:
        accelerator.backward(model(**scenario.batch).loss)
        optimizer.step()
    assert tracer.trace.optimizer_steps == 1
    assert tracer.diagnosis.codes("error") == ("not-updated",)  # lr 0, seen through AcceleratedOptimizer


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace:UserWarning")
def test_a_compiled_model_is_traced_through_its_original_module_and_says_so():
    scenario = causal_lm()
    compiled = torch.compile(scenario.model, backend="eager")  # dynamo without inductor: same hooks story, faster
    with pytest.warns(UserWarning, match="torch.compile'd"):
        with lora_trace.trace(compiled) as tracer:
            compiled(**scenario.batch).loss.backward()
    diagnosis = tracer.diagnosis
    assert diagnosis.ok and "note.compiled" in diagnosis.trace.notes
    assert {a.param for a in diagnosis.trace.arrivals} == scenario.truth.grad_params
    assert not any("_orig_mod" in s.module for s in diagnosis.trace.sites)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the compiled model still runs afterwards
        compiled(**scenario.batch)


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace:UserWarning")
@pytest.mark.filterwarnings("ignore:.*torch.compile'd.*:UserWarning")
def test_a_compiled_model_that_cuts_a_layer_says_what_its_hooks_cannot_see():
    """Compiled code runs modules without their hooks: a layer whose output is detached got no gradient, and the
    finding says so without claiming the layer never ran (found by a new-user trial: 'never ran' and, under
    inductor, 'No error')."""
    from peft import LoraConfig, get_peft_model

    class Cut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)).detach())

    torch.manual_seed(0)
    model = get_peft_model(Cut(), LoraConfig(r=4, target_modules=["a", "b"], init_lora_weights=False))
    compiled = torch.compile(model, backend="eager")
    compiled(torch.randn(4, 16)).sum().backward()  # compiled before the trace: its hooks are not in that code
    with lora_trace.trace(compiled) as tracer:
        compiled(torch.randn(4, 16)).sum().backward()
    (finding,) = tracer.diagnosis.findings
    assert finding.code == "lora-bypassed" and "torch.compile'd" in finding.message and "never ran" not in \
        finding.message
    assert "diagnose" in finding.fix and {f.split(".")[2] for f in finding.modules} == {"a"}
