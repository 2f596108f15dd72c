"""Hook hygiene and state: every hook gone after every entry point, in success and in failure."""

import warnings

import pytest
import torch

import lora_trace
from lora_trace.core.errors import InvalidModelError, LossNotFoundError, TraceStateError
from lora_trace.scenarios import contrastive_qwen2_audio

from ..helpers import hook_snapshot, traced_step


class Boom(RuntimeError):
    pass


@pytest.fixture
def scenario():
    scenario = contrastive_qwen2_audio(targets="audio-and-lm", strategy="full_forward")
    with torch.no_grad():
        scenario.step(scenario.model)  # transformers installs its own hidden-state hooks on a first forward
    return scenario


def _forward_raises(model):
    def explode(module, args):
        raise Boom("in forward")

    handle = model.speech_encoder.model.get_base_model().model.audio_tower.layers[0].register_forward_pre_hook(explode)
    return handle


@pytest.mark.parametrize("deep", [False, True])
def test_normal_exit_leaves_no_hook(scenario, deep):
    before = hook_snapshot(scenario.model)
    traced_step(scenario, deep=deep, optimizer_step=True)
    assert hook_snapshot(scenario.model) == before
    assert torch.overrides._get_current_function_mode_stack() == []


@pytest.mark.parametrize("deep", [False, True])
def test_exception_in_forward_passes_through_and_leaves_no_hook(scenario, deep):
    handle = _forward_raises(scenario.model)
    before = hook_snapshot(scenario.model)
    with pytest.raises(Boom, match="in forward"):
        with lora_trace.trace(scenario.model, deep=deep) as tracer:
            scenario.step(scenario.model)
    handle.remove()
    after = hook_snapshot(scenario.model)
    before_without = {k: tuple(x for x in v if x != handle.id) if k[1] == "_forward_pre_hooks" else v
                      for k, v in before.items()}
    assert after == before_without
    assert tracer.diagnosis.complete is False
    assert "Boom" in tracer.trace.error
    assert torch.overrides._get_current_function_mode_stack() == []


def test_exception_after_backward_keeps_the_partial_trace(scenario):
    before = hook_snapshot(scenario.model)
    with pytest.raises(Boom):
        with lora_trace.trace(scenario.model, deep=True) as tracer:
            scenario.step(scenario.model).backward()
            raise Boom("after backward")
    assert hook_snapshot(scenario.model) == before
    assert not tracer.diagnosis.complete
    assert len(tracer.trace.arrivals) == len(scenario.truth.grad_params)


def test_dry_run_with_a_raising_step_leaves_no_hook_and_no_change(scenario):
    before = hook_snapshot(scenario.model)
    weights = {n: p.detach().clone() for n, p in scenario.model.named_parameters()}

    def step(model):
        model(scenario.batch).backward()
        raise Boom("step")

    with pytest.raises(Boom):
        lora_trace.diagnose(scenario.model, step, optimizer=scenario.optimizer)
    assert hook_snapshot(scenario.model) == before
    assert all(torch.equal(weights[n], p) for n, p in scenario.model.named_parameters())
    assert all(p.grad is None for p in scenario.model.parameters())


def test_tracing_the_same_model_twice_at_once_is_refused(scenario):
    before = hook_snapshot(scenario.model)
    with lora_trace.trace(scenario.model):
        with pytest.raises(TraceStateError, match="already being traced"):
            with lora_trace.trace(scenario.model):
                pass
        with pytest.raises(TraceStateError):
            lora_trace.diagnose(scenario.model, scenario.step)
    assert hook_snapshot(scenario.model) == before
    with lora_trace.trace(scenario.model):  # free again afterwards
        pass


def test_a_tracer_runs_once_and_is_read_after_its_block(scenario):
    tracer = lora_trace.trace(scenario.model)
    with pytest.raises(TraceStateError, match="after"):
        tracer.diagnosis  # noqa: B018
    with tracer:
        with pytest.raises(TraceStateError):
            tracer.trace  # noqa: B018
    with pytest.raises(TraceStateError, match="already run"):
        with tracer:
            pass


def test_bad_input_gets_a_clear_error():
    with pytest.raises(InvalidModelError, match="torch.nn.Module"):
        lora_trace.trace("not a model")
    with pytest.raises(TypeError):  # InvalidModelError is a TypeError too
        lora_trace.diagnose(42, lambda m: m)


def test_a_step_returning_no_loss_says_how_to_return_it(scenario):
    before = hook_snapshot(scenario.model)
    with pytest.raises(LossNotFoundError, match="return the loss"):
        lora_trace.diagnose(scenario.model, lambda model: {"logits": model(scenario.batch)})
    assert hook_snapshot(scenario.model) == before


@pytest.mark.parametrize("wrap", ["dict", "tuple"])
def test_a_step_may_return_a_dict_or_tuple(scenario, wrap):
    def step(model):
        loss = model(scenario.batch)
        return {"loss": loss, "aux": 1} if wrap == "dict" else (loss, None)

    assert lora_trace.diagnose(scenario.model, step).ok


def test_dry_run_restores_weights_grads_flags_modes_optimizer_and_rng():
    scenario = contrastive_qwen2_audio(targets="audio-and-lm", strategy="full_forward")
    model, optimizer = scenario.model, scenario.optimizer
    model(scenario.batch).backward()
    optimizer.step()  # real optimizer state, and .grad present, before the dry run
    model.text_encoder.eval()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: (p.grad, p.grad.clone()) for n, p in model.named_parameters() if p.grad is not None}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
             for k, s in optimizer.state_dict()["state"].items()}
    rng = torch.get_rng_state()
    diagnosis = lora_trace.diagnose(model, scenario.step, optimizer=optimizer)
    assert diagnosis.codes("warning") == ("eval-mode",)
    assert all(torch.equal(weights[n], p) for n, p in model.named_parameters())
    for n, p in model.named_parameters():
        if n in grads:
            assert p.grad is grads[n][0] and torch.equal(p.grad, grads[n][1])
        else:
            assert p.grad is None
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert modes == {n: m.training for n, m in model.named_modules()}
    after = optimizer.state_dict()["state"]
    assert after.keys() == state.keys()
    for key, entry in state.items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(after[key][name]), torch.as_tensor(value))
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_in_place_op_after_a_lora_layer_still_works_under_the_tracer():
    """Full-backward module hooks would make this raise; the tracer must not change the program."""
    scenario = contrastive_qwen2_audio(targets="audio-only")
    layer = scenario.model.speech_encoder.model.get_base_model().model.audio_tower.layers[0].fc1
    x = torch.randn(2, layer.in_features, requires_grad=True)
    with lora_trace.trace(scenario.model, deep=True):
        y = layer(x)
        y.add_(1.0)
        y.sum().backward()
    assert layer.lora_B["default"].weight.grad is not None


def test_a_step_that_changes_frozen_weights_in_place_is_restored_exactly(scenario):
    """diagnose() copies what the optimizer holds up front, and any other tensor just before the step first
    writes it (deep mode sees the in-place op): the weight is back bit for bit, with no copy of the rest."""
    head = scenario.model.speech_encoder.model.get_base_model().lm_head.weight
    before = head.detach().clone()

    def step(model):
        with torch.no_grad():
            head.mul_(2.0)  # an in-place edit of a frozen weight
            head.data.add_(1.0)  # and a write through .data, which moves no version counter
        return model(scenario.batch)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lora_trace.diagnose(scenario.model, step, optimizer=scenario.optimizer)
    assert torch.equal(head, before)


@pytest.mark.parametrize("deep", [False, True])
def test_autograd_moves_each_lora_gradient_into_grad_as_without_the_tracer(scenario, deep):
    """A hook holding the incoming gradient makes autograd copy it into .grad (twice the memory, a copy per
    parameter): the tracer must leave the gradient autograd computed as the very tensor in .grad."""
    lora = [p for name, p in scenario.model.named_parameters() if "lora_" in name and p.requires_grad]
    computed = {}
    handles = [p.register_hook(lambda grad, i=i: computed.__setitem__(i, grad.data_ptr())) for i, p in enumerate(lora)]
    try:
        with lora_trace.trace(scenario.model, deep=deep) as tracer:
            scenario.step(scenario.model).backward()
    finally:
        for handle in handles:
            handle.remove()
    assert computed and all(lora[i].grad.data_ptr() == ptr for i, ptr in computed.items())
    assert any(arrival.norm for arrival in tracer.trace.arrivals)
