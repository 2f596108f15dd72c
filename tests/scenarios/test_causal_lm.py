"""Ground truth of the causal-LM configuration faults, with plain PyTorch; then the diagnosis of each."""

import math

import pytest
import torch

import lora_trace
from lora_trace.scenarios import measure_gradients
from lora_trace.scenarios.causal_lm import CAUSAL_FAULTS, causal_lm


@pytest.mark.parametrize("fault", CAUSAL_FAULTS)
def test_truth_matches_a_real_backward(fault):
    scenario = causal_lm(fault=fault)
    measured = measure_gradients(scenario)
    assert measured.with_grad() == scenario.truth.grad_params
    if fault == "all-ignored":
        assert math.isnan(measured.loss)
        assert all(state.value == "zero" for state in measured.states.values())


@pytest.mark.parametrize("fault", CAUSAL_FAULTS)
def test_each_fault_is_diagnosed_with_its_code(fault):
    scenario = causal_lm(fault=fault)
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer,
                                    scaler=scenario.scaler)
    got = [(f.code, f.severity) for f in diagnosis.findings if f.severity != "info"]
    assert got == [(e.code, e.severity) for e in scenario.truth.findings], diagnosis.report()
    assert diagnosis.ok == (scenario.truth.error_codes == ())


def test_not_updated_names_the_zero_learning_rate():
    scenario = causal_lm(fault="lr-zero")
    finding = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer).findings[0]
    assert "learning rate of 0" in finding.message and finding.evidence["lrs"] == [0.0]


def test_a_trace_without_an_optimizer_step_does_not_claim_not_updated():
    scenario = causal_lm(fault="lr-zero")
    with lora_trace.trace(scenario.model, optimizer=scenario.optimizer) as tracer:
        scenario.step(scenario.model).backward()  # no optimizer.step(): nothing to judge
    assert "not-updated" not in tracer.diagnosis.codes()


def test_the_glob_entry_gets_a_checked_regex():
    scenario = causal_lm(fault="glob-target")
    finding = lora_trace.diagnose(scenario.model, scenario.step).findings[0]
    assert finding.code == "target-unmatched"
    assert "'layers.*.mlp.down_proj' -> 0" in finding.message and "'q_proj' -> 2" in finding.message
    assert r'target_modules=r"(.*\.)?(layers\..*\.mlp\.down_proj|q_proj)"' in finding.fix


def test_the_inactive_adapter_is_named():
    scenario = causal_lm(fault="not-active")
    finding = lora_trace.diagnose(scenario.model, scenario.step).findings[0]
    assert "default trainable; active: other" in finding.message


def test_a_skipping_grad_scaler_is_named_and_its_state_restored():
    scenario = causal_lm(fault="scaler-skip")
    scale = scenario.scaler.get_scale()
    diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer,
                                    scaler=scenario.scaler)
    assert diagnosis.codes("error") == ("not-updated",)
    assert "GradScaler" in diagnosis.findings[0].message and diagnosis.trace.scaler_skipped
    assert scenario.scaler.get_scale() == scale


def test_gradients_cleared_between_backward_and_step_are_named_as_such():
    """zero_grad() between backward() and step(): the gradients arrived, then AdamW found .grad None and skipped
    every LoRA parameter. Named from what the step pre-hook saw, not guessed as a GradScaler skip."""
    scenario = causal_lm()
    model, optimizer = scenario.model, scenario.optimizer
    with lora_trace.trace(model, optimizer=optimizer) as tracer:
        scenario.step(model).backward()
        optimizer.zero_grad()
        optimizer.step()
    (finding,) = [f for f in tracer.diagnosis.findings if f.code == "not-updated"]
    assert finding.severity == "error" and ".grad was None when optimizer.step() ran" in finding.message
    assert "never between backward() and step()" in finding.fix
    with lora_trace.trace(model, optimizer=optimizer) as healthy:
        scenario.step(model).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert healthy.trace.optimizer.no_grad_at_step == () and "not-updated" not in healthy.diagnosis.codes()


def test_an_optimizer_holding_only_one_factor_is_named_as_filtered_with_no_promise_for_the_other():
    """The optimizer holds lora_A only: lora_B never leaves zero, so the first-step note ('lora_A will get a
    gradient after the first update') would be false; the finding names the missing role, not 'built before
    get_peft_model'."""
    scenario = causal_lm()
    model = scenario.model
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if "lora_A" in n], lr=1e-3)
    with lora_trace.trace(model, optimizer=optimizer) as tracer:
        scenario.step(model).backward()
        optimizer.step()
    assert [(f.code, f.severity) for f in tracer.diagnosis.findings] == [("not-in-optimizer", "error")]
    finding = tracer.diagnosis.findings[0]
    assert "4 of 8 trainable LoRA parameters (lora_B)" in finding.message and "before" not in finding.fix


@pytest.mark.parametrize("optimizer, warm", [(lambda ps: torch.optim.SGD(ps, lr=0.1), True),
                                             (lambda ps: torch.optim.AdamW(ps), False)])
def test_gradients_zeroed_between_backward_and_step_are_named_not_called_rounded(optimizer, warm):
    """clip_grad_norm_(max_norm=0) zeroes every gradient before the update: SGD's step is then 0, which the
    rounding check had called 'rounded away, expected' (information). The gradient the update used is kept.
    (AdamW moves on its momentum after a first step, so it is caught at its first: no momentum yet.)"""
    scenario = causal_lm()
    model = scenario.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params)
    if warm:  # an ordinary step first: lora_B leaves zero, so every factor gets a non-zero gradient
        scenario.step(model).backward()
        opt.step()
        opt.zero_grad()
    with lora_trace.trace(model, optimizer=opt) as tracer:
        scenario.step(model).backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=0.0)
        opt.step()
        opt.zero_grad()
    (finding,) = [f for f in tracer.diagnosis.findings if f.code == "not-updated"]
    assert finding.severity == "error" and finding.evidence["why"] == "zeroed" and "max_norm" in finding.fix
    assert finding.evidence["stale_params"] == (8 if warm else 4)  # cold: lora_A's own gradient was zero


def test_layers_taken_out_by_merge_and_unload_are_named_with_a_fix_for_that():
    """merge_and_unload() for an export, then training goes on with the PeftModel: the targets still select
    modules, which are plain now. Not a target_modules mistake (the old fix said so)."""
    scenario = causal_lm()
    scenario.model.merge_and_unload()
    (finding,) = lora_trace.diagnose(scenario.model, scenario.step).findings[:1]
    assert finding.code == "no-lora-params" and "merge_and_unload()" in finding.message
    assert "target_modules" not in finding.fix and "unmerge_adapter" in finding.fix


def test_a_step_that_never_calls_the_traced_model_says_so():
    """LoRA on a copy, the step runs the original: 'the step went through -' told the user nothing."""
    import copy

    scenario = causal_lm()
    base = copy.deepcopy(scenario.model.get_base_model())
    for p in base.parameters():
        p.requires_grad_(True)
    diagnosis = lora_trace.diagnose(scenario.model, lambda m: base(**scenario.batch).loss)
    finding = diagnosis.root_cause
    assert finding.code == "lora-bypassed" and "nothing of the model given to lora-trace ran" in finding.message
    assert "not `base(...)`" in finding.fix


@torch.no_grad()
def _encode(model, batch):  # an evaluation helper reused in training
    return model(**batch).logits


def test_a_no_grad_decorator_gets_a_fix_about_the_decorator():
    scenario = causal_lm()

    def step(model):
        logits = _encode(model, scenario.batch)
        labels = scenario.batch["labels"].flatten()
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).requires_grad_(), labels)

    finding = lora_trace.diagnose(scenario.model, step).root_cause
    assert finding.code == "grad-disabled" and "@torch.no_grad()" in finding.fix and "with torch" not in finding.fix
