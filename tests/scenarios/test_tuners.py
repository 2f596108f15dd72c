"""Every PEFT tuner that adds weights: adapters found by their tuner-layer class, a healthy first step with no
error or warning, planted failures named, each against a real backward."""

import re

import pytest
import torch

import lora_trace
from lora_trace.capture.peft import SUPPORTED_TUNERS
from lora_trace.scenarios.tuners import tuner_model, tuner_names

TUNERS = tuner_names()
pytestmark = [pytest.mark.filterwarnings("ignore:Failed to load the CUDA extension"),  # BOFT on CPU
              pytest.mark.filterwarnings("ignore:Sparse invariant checks")]  # SHiRA


def test_every_tuner_here_is_one_lora_trace_supports():
    assert set(TUNERS) == SUPPORTED_TUNERS


@pytest.mark.parametrize("tuner", TUNERS)
def test_a_healthy_first_step_gets_no_error_and_every_adapter_parameter_is_traced(tuner):
    scenario = tuner_model(tuner)
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    traced = {p for s in diagnosis.trace.sites for p in s.trainable_params}
    assert traced == scenario.truth.lora_params
    assert {s.tuner for s in diagnosis.trace.sites} == {tuner}
    assert {a.param for a in diagnosis.trace.arrivals} == scenario.truth.grad_params == scenario.truth.lora_params
    assert [f.code for f in diagnosis.findings if f.severity != "info"] == [], diagnosis.report()


@pytest.mark.parametrize("tuner", TUNERS)
def test_exact_zeros_of_a_first_step_are_explained_by_the_tuners_zero_factor(tuner):
    """Which factor a tuner initialises to zero is read from the values, not known by name: every exactly-zero
    gradient of the first step must be explained as zero-grad-at-init, and nothing else."""
    scenario = tuner_model(tuner)
    model = scenario.model
    model.zero_grad(set_to_none=True)
    scenario.step(model).backward()
    zero = {n for n, p in model.named_parameters() if n in scenario.truth.lora_params and p.grad is not None
            and not torch.any(p.grad)}
    model.zero_grad(set_to_none=True)
    diagnosis = lora_trace.diagnose(model, scenario.step, optimizer=scenario.optimizer)
    assert {a.param for a in diagnosis.trace.arrivals if a.zero} == zero
    at_init = [f for f in diagnosis.findings if f.code == "zero-grad-at-init"]
    assert bool(at_init) == bool(zero)
    if zero:
        assert set(at_init[0].modules) == {n.split(f".{_role(diagnosis, n)}.")[0] for n in zero}
        waiting = {_role(diagnosis, n) for n in zero}  # the sentence names this tuner's own factors
        assert all(role in at_init[0].message for role in waiting), at_init[0].message
        assert f"{len(at_init[0].modules)} {tuner} layers" in at_init[0].message
        roles = {p.role for site in diagnosis.trace.sites for p in site.params}
        named = set(re.findall(r"\b[a-z]+_[A-Za-z0-9_]+\b", at_init[0].message))
        assert named <= roles, (named - roles, at_init[0].message)  # no factor this tuner does not have


def _role(diagnosis, name):
    return next(p.role for s in diagnosis.trace.sites for p in s.params if p.name == name)


@pytest.mark.parametrize("tuner", TUNERS)
def test_a_detached_path_is_named_at_its_line(tuner):
    scenario = tuner_model(tuner, fault="detached")
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    trainable = {p for s in diagnosis.trace.sites for p in s.trainable_params}
    starved = trainable - {a.param for a in diagnosis.trace.arrivals}
    assert starved == scenario.truth.starved_params
    if not starved:  # the cut starves nothing (one parameter shared by every layer): no false alarm
        assert diagnosis.ok, diagnosis.report()
        return
    first = diagnosis.findings[0]
    assert first.code == "detached" and first.location.endswith(f"tuners.py:{_line('fault: detached')}")
    assert first.modules and not any(".blocks.1." in m for m in first.modules)


@pytest.mark.parametrize("tuner", TUNERS)
def test_a_frozen_adapter_is_named(tuner):
    scenario = tuner_model(tuner, fault="frozen")
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
    assert scenario.truth.grad_params == frozenset()
    assert diagnosis.codes("error") == ("lora-frozen",), diagnosis.report()
    frozen = diagnosis.findings[0]
    for lang in ("en", "zh"):  # the finding names the tuner it is about, in every language
        message, _ = frozen.text(lang)
        assert f" {tuner} " in message and "LoRA" not in message.replace(tuner, ""), message


def _line(marker):
    import inspect

    from lora_trace.scenarios import tuners

    lines, start = inspect.getsourcelines(tuners.TwoBlocks.forward)
    return start + next(i for i, line in enumerate(lines) if marker in line)


class _FutureLayer(torch.nn.Module):
    """A tuner layer lora-trace has never seen (a PEFT release newer than it, or a custom tuner)."""

    adapter_layer_names = ("future_delta",)

    def __init__(self, base):
        from peft.tuners.tuners_utils import BaseTunerLayer

        torch.nn.Module.__init__(self)
        BaseTunerLayer.__init__(self)
        self.base_layer = base
        self.future_delta = torch.nn.ParameterDict({"default": torch.nn.Parameter(torch.zeros(base.out_features))})
        self._active_adapter = "default"

    def forward(self, x):
        return self.base_layer(x) + self.future_delta["default"]


def test_an_unknown_tuner_gets_one_warning_naming_it_and_never_an_error():
    from peft.tuners.tuners_utils import BaseTunerLayer

    future = type("FutureLayer", (_FutureLayer, BaseTunerLayer), {})
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    model[0] = future(model[0])
    diagnosis = lora_trace.diagnose(model, lambda m: m(torch.randn(2, 4)).sum())
    assert [(f.code, f.severity) for f in diagnosis.findings] == [("tuner-unsupported", "warning")]
    assert "Future adapters found (1 layer)" in diagnosis.findings[0].message


def test_prompt_learning_is_named_as_configuration_checks_only():
    from peft import PromptTuningConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lora_trace.scenarios.qwen2_audio import quiet_transformers

    with quiet_transformers():
        base = Qwen2ForCausalLM(Qwen2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            num_key_value_heads=2, intermediate_size=32, vocab_size=32))
        model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    ids = torch.randint(0, 32, (2, 6))
    diagnosis = lora_trace.diagnose(model, lambda m: m(input_ids=ids, labels=ids).loss)
    assert [(f.code, f.severity) for f in diagnosis.findings] == [("tuner-unsupported", "warning")]
    assert "PROMPT_TUNING" in diagnosis.findings[0].message
