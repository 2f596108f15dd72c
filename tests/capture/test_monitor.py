"""`lora_trace.watch()`: counters on every step, a full trace of the step after a symptom, nothing left behind."""

import pytest
import torch

import lora_trace

from ..helpers import hook_snapshot


def _model():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    return get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def _optimizer(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def _ids(step):
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(step))


def _train(model, optimizer, steps, before_step=lambda step: None, scheduler=None, **watch):
    with lora_trace.watch(model, optimizer=optimizer, **watch) as w:
        for step in range(steps):
            before_step(step)
            model(input_ids=_ids(step), labels=_ids(step)).loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            optimizer.zero_grad()
    return w


def test_a_healthy_run_shows_no_symptom_traces_nothing_and_leaves_no_hook():
    model = _model()
    optimizer = _optimizer(model)
    before = hook_snapshot(model), len(optimizer._optimizer_step_pre_hooks), len(optimizer._optimizer_step_post_hooks)
    w = _train(model, optimizer, 5)
    assert w.steps == 5 and w.symptoms == [] and w.diagnoses == []
    assert (hook_snapshot(model), len(optimizer._optimizer_step_pre_hooks),
            len(optimizer._optimizer_step_post_hooks)) == before


def test_a_schedule_that_reaches_zero_is_noted_and_the_next_step_traced_in_full():
    model = _model()
    optimizer = _optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 3 else 0.0)
    w = _train(model, optimizer, 6, scheduler=scheduler)
    assert [(s.step, s.kind) for s in w.symptoms] == [(3, "lr-zero")]
    (step, diagnosis), = w.diagnoses
    assert step == 4 and diagnosis.codes("error") == ("not-updated",) and diagnosis.trace.optimizer_steps == 1
    assert "the schedule has reached 0" in diagnosis.findings[0].message  # its optimizer had stepped before


def test_an_adapter_frozen_mid_run_is_a_state_change_and_the_next_step_names_it():
    model = _model()
    optimizer = _optimizer(model)

    def freeze_layer_1(step):
        if step == 4:
            for name, param in model.named_parameters():
                if "layers.1." in name and "lora_" in name:
                    param.requires_grad_(False)

    w = _train(model, optimizer, 7, freeze_layer_1)
    assert [(s.step, s.kind) for s in w.symptoms] == [(4, "state-change")]
    assert all("layers.1." in m for m in w.symptoms[0].modules)
    (step, diagnosis), = w.diagnoses
    assert step == 5 and diagnosis.root_cause.code == "lora-frozen"


def test_one_factor_frozen_names_exactly_its_layer():
    model = _model()
    optimizer = _optimizer(model)
    target = "base_model.model.model.layers.0.self_attn.v_proj"
    factor = model.get_submodule(target).lora_A["default"].weight
    w = _train(model, optimizer, 4, lambda step: factor.requires_grad_(False) if step == 2 else None)
    change = [s for s in w.symptoms if s.kind == "state-change"]
    assert [(s.step, s.modules) for s in change] == [(2, (target,))]


def test_an_adapter_switched_mid_run_is_a_state_change():
    from peft import LoraConfig

    model = _model()
    model.add_adapter("other", LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    optimizer = _optimizer(model)
    w = _train(model, optimizer, 5, lambda step: model.set_adapter("other") if step == 2 else None)
    assert (2, "state-change") in [(s.step, s.kind) for s in w.symptoms]
    assert w.diagnoses and w.diagnoses[0][0] == 3


def test_a_path_cut_mid_run_is_no_gradient_and_the_next_step_finds_the_cut():
    lm, head = _model(), torch.nn.Linear(64, 1)
    model = torch.nn.ModuleDict({"lm": lm, "head": head})
    optimizer = _optimizer(model)
    with lora_trace.watch(model, optimizer=optimizer) as w:
        for step in range(5):
            logits = lm(input_ids=_ids(step)).logits
            head(logits.detach() if step >= 2 else logits).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    assert [(s.step, s.kind) for s in w.symptoms] == [(2, "no-grad")]
    (step, diagnosis), = w.diagnoses
    assert step == 3 and diagnosis.root_cause.code in ("lora-off-path", "detached")


def test_a_run_ending_inside_the_step_traced_in_full_keeps_it_and_leaves_no_hook():
    model = _model()
    optimizer = _optimizer(model)
    before = hook_snapshot(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0 if step >= 2 else 1.0)
    with pytest.raises(RuntimeError, match="boom"):
        with lora_trace.watch(model, optimizer=optimizer, max_traces=1) as w:
            for step in range(3):
                model(input_ids=_ids(step), labels=_ids(step)).loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            model(input_ids=_ids(9), labels=_ids(9)).loss.backward()
            raise RuntimeError("boom")
    (step, diagnosis), = w.diagnoses
    assert step == 3 and not diagnosis.complete and "boom" in diagnosis.trace.error
    assert hook_snapshot(model) == before


def test_watch_needs_the_optimizer():
    with pytest.raises(lora_trace.LoraTraceError, match="needs the optimizer"):
        lora_trace.watch(_model(), optimizer=None)


def test_no_more_than_max_traces_full_traces():
    model = _model()
    optimizer = _optimizer(model)
    layers = [m for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))]

    def freeze_one_more(step):  # a new state change every step
        if 1 <= step <= len(layers):
            for p in layers[step - 1].lora_A.parameters():
                p.requires_grad_(False)

    w = _train(model, optimizer, 7, freeze_one_more, max_traces=1)
    # step 2's change falls in the step traced in full (which names it); later ones are noted, not traced
    assert [s.step for s in w.symptoms] == [1, 3, 4] and [step for step, _ in w.diagnoses] == [2]


def test_gradients_zeroed_in_place_are_no_false_symptom():
    """zero_grad(set_to_none=False) keeps the .grad tensors: a new backward still shows as a new version."""
    model = _model()
    optimizer = _optimizer(model)
    with lora_trace.watch(model, optimizer=optimizer) as w:
        for step in range(4):
            model(input_ids=_ids(step), labels=_ids(step)).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)
    assert w.symptoms == [] and w.diagnoses == []


def test_a_warm_up_starting_at_zero_and_an_evaluation_after_the_last_step_are_no_symptom():
    model = _model()
    optimizer = _optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step, 2) / 2)  # 0, 0.5, 1, 1...
    with lora_trace.watch(model, optimizer=optimizer) as w:
        for step in range(4):
            model(input_ids=_ids(step), labels=_ids(step)).loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        with torch.no_grad():
            model(input_ids=_ids(9))  # an evaluation after the last step
    assert w.symptoms == [] and w.diagnoses == []


def test_a_failure_of_the_full_trace_never_ends_the_users_training(monkeypatch):
    import lora_trace.capture.build as build

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in lora-trace")

    monkeypatch.setattr(build, "build_trace", broken)
    model = _model()
    optimizer = _optimizer(model)
    before = hook_snapshot(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 1 else 0.0)
    with pytest.warns(UserWarning, match="could not build the trace"):
        w = _train(model, optimizer, 4, scheduler=scheduler)
    assert w.steps == 4 and [s.kind for s in w.symptoms] == ["lr-zero"] and w.diagnoses == []
    assert hook_snapshot(model) == before
