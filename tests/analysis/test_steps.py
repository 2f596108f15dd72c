"""judge_steps across K real traced steps: a learning rate of 0 is a warm-up's start or a schedule's end."""

import pytest
import torch

import lora_trace
from lora_trace.analysis.steps import judge_steps


def _steps(factor, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3), schedule_inside=True, dtype=None,
           block=None, scaler=None):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model = model.to(dtype) if dtype else model
    optimizer = optimizer([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor) if factor else None  # None: no schedule
    diagnoses = []
    for step in range(3):
        ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(step))
        with lora_trace.trace(model, optimizer=optimizer, scaler=scaler) as t:
            if block is not None:  # the test's own block
                block(model, ids, optimizer)
            else:
                model(input_ids=ids, labels=ids).loss.backward()
                optimizer.step()
            if schedule_inside and scheduler:  # as the HF Trainer and Lightning step it: the block sees where
                scheduler.step()  # it goes next
        if not schedule_inside and scheduler:
            scheduler.step()
        optimizer.zero_grad()
        diagnoses.append(t.diagnosis)
    return diagnoses


@pytest.mark.parametrize("name, factor, verdict", [
    ("warm-up", lambda step: min(step, 1.0), None),  # 0 at step 0, then learning: the warning goes
    ("decayed", lambda step: 1.0 if step < 1 else 0.0, "error"),  # learning at step 0, then 0 for good
    ("constant", lambda step: 1.0, None),
])
def test_a_zero_learning_rate_is_judged_by_what_came_before_and_after(name, factor, verdict):
    steps = _steps(factor)
    judged = judge_steps(steps)
    stalled = [f for f in judged.findings if f.code == "not-updated"]
    if verdict is None:
        assert stalled == [], judged.report()
    else:
        (finding,) = stalled
        assert finding.severity == verdict and "reached 0" in finding.message
        assert finding.evidence["last_updated_step"] == 0 and finding.evidence["first_stalled_step"] == 1
    first = [f.severity for f in steps[0].findings if f.code == "not-updated"]
    later = [f.severity for d in steps[1:] for f in d.findings if f.code == "not-updated"]
    if name == "warm-up":  # AdamW's empty state says step 0 was its first: a warm-up's start, information
        assert first == ["info"] and later == [] and "first step" in steps[0].findings[0].message
    if name == "decayed":  # one step tells a schedule's end where AdamW had stepped before and the rate stays 0
        assert first == [] and "error" in later
        (ended,) = [f for f in steps[1].findings if f.code == "not-updated"]
        assert "the schedule has reached 0" in ended.message and "total steps" in ended.fix


def test_a_stateless_optimizer_cannot_tell_its_first_step_so_a_zero_rate_still_warns():
    steps = _steps(lambda step: min(step, 1.0), lambda params: torch.optim.SGD(params, lr=0.5))
    assert steps[0].trace.optimizer.first_step is None
    assert [f.severity for f in steps[0].findings if f.code == "not-updated"] == ["warning"]
    assert [f for f in judge_steps(steps).findings if f.code == "not-updated"] == []  # K steps: a warm-up


def test_a_warm_up_start_is_information_only_where_the_block_shows_the_rate_rising():
    """Scheduled after the block, step 0 cannot show the warm-up rising (a schedule stuck at 0 looks the same):
    a warning; K steps still see the warm-up."""
    steps = _steps(lambda step: min(step, 1.0), schedule_inside=False)
    assert [f.severity for f in steps[0].findings if f.code == "not-updated"] == ["warning"]
    assert [f for f in judge_steps(steps).findings if f.code == "not-updated"] == []
    stuck = _steps(lambda step: 0.0)  # num_training_steps=0 in a linear schedule: lr 0 for good
    assert [f.severity for f in stuck[0].findings if f.code == "not-updated"] == ["warning"]


def test_a_stall_after_a_warm_up_start_is_still_judged_across_steps():
    steps = _steps(lambda step: [0.0, 1.0, 0.0, 0.0][step])  # info at step 0 must not hide the stall at step 2
    (finding,) = [f for f in judge_steps(steps).findings if f.code == "not-updated"]
    assert finding.severity == "error" and finding.evidence["first_stalled_step"] == 2


def test_a_gradient_step_below_the_float_spacing_is_information_not_a_skipped_step():
    """Plain SGD moves a factor by lr x gradient; while its partner is near zero that gradient is ~1e-9 and the
    step rounds away in float32. Said as information (the false 'skipped step' error before); K steps: nothing."""
    steps = _steps(lambda step: min(step, 1.0), lambda params: torch.optim.SGD(params, lr=1e-3), schedule_inside=False)
    (finding,) = [f for f in steps[2].findings if f.code == "not-updated"]
    assert finding.severity == "info" and "rounded away" in finding.message and finding.evidence["rounded"]
    assert steps[2].trace.optimizer.rounded and not [f for f in judge_steps(steps).findings if f.code == "not-updated"]


def test_a_gradient_removed_before_the_step_is_still_an_error_under_plain_sgd():
    """The rounding test reads the gradient that arrived: one the user's code drops before optimizer.step() would
    have moved the values, so the error stands."""
    steps = _steps(lambda step: 1.0, lambda params: _DropsOneGradient(params, lr=0.5))
    (finding,) = [f for f in steps[2].findings if f.code == "not-updated"]
    assert finding.severity == "error" and steps[2].trace.optimizer.rounded == ()


class _DropsOneGradient(torch.optim.SGD):
    def step(self, closure=None):
        self.param_groups[0]["params"][0].grad = None  # a lora_A with a real gradient (lora_B moved it by now)
        return super().step(closure)


@pytest.mark.parametrize("optimizer, rounded", [
    (lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9), True),  # steps by its buffer: judged
    (lambda params: torch.optim.AdamW(params, lr=1e-3), False),  # normalises: tiny gradients move, never judged
])
def test_only_an_optimizer_that_steps_by_the_gradient_or_its_buffer_is_judged_for_rounding(optimizer, rounded):
    steps = _steps(lambda step: min(step, 1.0), optimizer, schedule_inside=False)
    assert bool(steps[2].trace.optimizer.rounded) is rounded
    assert "error" not in [f.severity for f in steps[2].findings if f.code == "not-updated"]


def test_an_optimizer_that_computes_its_own_rate_is_traced_and_judged_without_one():
    """transformers' Adafactor with relative_step keeps lr=None in its groups: reading it as a number raised
    inside the user's optimizer.step(). Its rate is unknown, not 0: no lr-zero claim, the update still judged."""
    from transformers.optimization import Adafactor

    steps = _steps(None, lambda params: Adafactor(params, lr=None, relative_step=True, warmup_init=True))
    assert all(d.trace.error is None and d.trace.optimizer.step_lrs == (None,) for d in steps)
    assert steps[2].trace.optimizer.updated and not judge_steps(steps).codes("error")


def test_bf16_adapter_weights_at_a_small_adam_rate_are_named_as_lost_to_their_precision():
    """AdamW moves each element by about lr = 1e-5, under half the bf16 spacing of a typical lora_A value
    (~3e-4): the update rounds away. An error (the adapter does not learn) with that cause, not 'a skipped step'."""
    steps = _steps(None, lambda params: torch.optim.AdamW(params, lr=1e-5), dtype=torch.bfloat16)
    stale = [f for d in steps[1:] for f in d.findings if f.code == "not-updated"]
    assert stale and all(f.severity == "error" and "precision rounds it away" in f.message for f in stale)
    assert "float32" in stale[0].fix
    fp32 = _steps(None, lambda params: torch.optim.AdamW(params, lr=1e-5))  # the same rate moves float32 weights
    assert not [f for d in fp32 for f in d.findings if f.code == "not-updated"]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rounding_is_judged_from_the_gradient_the_update_used_even_after_zero_grad_in_the_block(momentum):
    """The HF Trainer's order: step, then zero_grad, then the block ends. .grad is gone by then; the gradient as
    optimizer.step() began is what the update used. Before, the norm bound failed and a false error came out."""
    def in_block(model, ids, optimizer):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    steps = _steps(None, lambda params: torch.optim.SGD(params, lr=1e-2, momentum=momentum), block=in_block)
    assert [f.severity for d in steps for f in d.findings if f.code == "not-updated"] == ["info"] * 2
    assert all(d.trace.optimizer.rounded for d in steps[1:])


def test_under_a_grad_scaler_that_did_not_skip_rounding_is_judged_on_the_unscaled_gradient():
    """The arrivals are scaled (x 65536); the gradient at the step was unscaled by GradScaler.step. No 'a GradScaler
    skipped' guess where its scale shows it did not."""
    scaler = torch.amp.GradScaler("cpu")

    def in_block(model, ids, optimizer):
        scaler.scale(model(input_ids=ids, labels=ids).loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()

    steps = _steps(None, lambda params: torch.optim.SGD(params, lr=1e-2), block=in_block, scaler=scaler)
    assert not [f for d in steps for f in d.findings if f.code == "not-updated" and f.severity != "info"]
    assert steps[1].trace.scaler_skipped is False and steps[1].trace.optimizer.rounded
