"""The gradient hooks: whether a backward fills .grad is asked of the autograd engine, once per backward; .grad
norms are read when it ends."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

import lora_trace
from lora_trace.capture import gradients
from lora_trace.capture.gradients import will_accumulate

from .conftest import TwoLayers


def _answers(run):
    param = torch.nn.Parameter(torch.ones(3))
    seen = []
    handle = param.register_hook(lambda grad: seen.append(will_accumulate(param)))
    run(param)
    handle.remove()
    return seen, param.grad


def test_backward_accumulates_and_autograd_grad_does_not():
    seen, grad = _answers(lambda p: (p * 2).sum().backward())
    assert seen == [True] and grad is not None
    seen, grad = _answers(lambda p: torch.autograd.grad((p * 2).sum(), [p]))
    assert seen == [False] and grad is None


def test_a_torch_that_cannot_be_asked_still_gets_every_norm(monkeypatch):
    """Without the engine's answer the norm is taken in the hook: the same numbers, one op more."""
    torch.manual_seed(0)
    model = get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder", "decoder"], init_lora_weights=False))
    x = torch.randn(4, 8)

    def norms():
        model.zero_grad(set_to_none=True)
        with lora_trace.trace(model) as tracer:
            model(x).backward()
        return {a.param: a.norm for a in tracer.trace.arrivals}

    asked = norms()
    monkeypatch.setattr(gradients, "_GRAPH_TASK", None)
    monkeypatch.delattr(torch._C, "_will_engine_execute_node")
    assert norms() == asked and all(asked.values())


def _lora_model():
    torch.manual_seed(0)
    return get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder", "decoder"], init_lora_weights=False))


def test_a_parameter_frozen_during_backward_never_breaks_the_users_backward():
    """Freezing a factor before its gradient arrives: the engine cannot be asked about it; the tracer says
    'no' and takes the norm itself instead of raising inside the user's backward."""
    model = _lora_model()
    decoder = model.base_model.model.decoder
    with lora_trace.trace(model) as tracer:
        loss = model(torch.randn(4, 8))
        loss.grad_fn.register_prehook(lambda grad: [p.requires_grad_(False) for p in decoder.lora_B.parameters()]
                                      and None)
        loss.backward()
    assert len(tracer.trace.arrivals) == 4


def test_a_batched_autograd_grad_counts_its_arrivals_with_unknown_norms():
    """is_grads_batched=True: a norm of a vmap-batched gradient cannot be taken in the hook; the arrival counts."""
    model = _lora_model()
    params = [p for name, p in model.named_parameters() if "lora_" in name]
    with lora_trace.trace(model) as tracer:
        out = model.base_model.model.decoder(model.base_model.model.encoder(torch.randn(3, 8))).sum(0)
        torch.autograd.grad(out, params, grad_outputs=torch.eye(8), is_grads_batched=True)
    assert [(a.count, a.norm) for a in tracer.trace.arrivals] == [(1, None)] * 4


def test_a_gradient_whose_norm_cannot_be_taken_still_arrives_and_backward_goes_on(monkeypatch):
    """A layout the norm does not take (sparse, a tensor subclass): the arrival counts, its norm is unknown."""
    model = _lora_model()

    def refuse(grad):
        raise NotImplementedError("no norm for this layout")

    monkeypatch.setattr(gradients, "grad_norm", refuse)
    monkeypatch.setattr(gradients, "foreach_norm", refuse)
    with lora_trace.trace(model) as tracer:
        model(torch.randn(4, 8)).backward()
    assert [(a.count, a.norm) for a in tracer.trace.arrivals] == [(1, None)] * 4
    assert all(p.grad is not None for name, p in model.named_parameters() if "lora_" in name)


def test_one_gradient_hook_per_parameter_and_the_norms_read_when_each_backward_ends():
    """A plain parameter gets one hook (no post-accumulate hook); each backward that fills .grad counts one
    arrival per parameter and reads the norm of .grad as that backward ends: after two accumulations, the
    norm of their sum."""
    model = _lora_model()
    x = torch.randn(4, 8)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    with lora_trace.trace(model) as tracer:
        assert all(len(p._backward_hooks) == 1 and not p._post_accumulate_grad_hooks for p in lora)
        model(x).backward()
        model(x * 2).backward()
    by_name = dict(model.named_parameters())
    for arrival in tracer.trace.arrivals:
        grad = by_name[arrival.param].grad
        assert arrival.count == 2 and arrival.norm == torch.linalg.vector_norm(grad).item()


def test_a_nested_backward_inside_a_reentrant_checkpoint_counts_each_parameter_once():
    """A reentrant checkpoint runs a backward inside the outer one: each ends with its own callback, and
    every accumulated parameter is counted once with the norm of its .grad."""
    from torch.utils.checkpoint import checkpoint

    model = _lora_model()
    decoder = model.base_model.model.decoder
    x = torch.randn(4, 8, requires_grad=True)
    with lora_trace.trace(model) as tracer:
        h = checkpoint(model.base_model.model.encoder, x, use_reentrant=True)
        decoder(torch.relu(h)).pow(2).mean().backward()
    by_name = dict(model.named_parameters())
    arrivals = {a.param: a for a in tracer.trace.arrivals}
    assert {n for n in by_name if "lora_" in n} == set(arrivals)
    for name, arrival in arrivals.items():
        assert arrival.count == 1 and arrival.norm == torch.linalg.vector_norm(by_name[name].grad).item()


def test_a_backward_that_raises_keeps_the_gradients_it_accumulated():
    """Autograd skips the callback of a backward that raises: the block's end reads what it accumulated, so a
    non-finite gradient stopped by the user's own guard is still named."""
    model = _lora_model()
    inner = model.base_model.model

    def guard(grad):
        if not torch.isfinite(grad).all():
            raise FloatingPointError("non-finite gradient")

    with pytest.raises(FloatingPointError), lora_trace.trace(model) as tracer:
        h = torch.relu(inner.encoder(torch.randn(4, 8)))
        h.register_hook(guard)  # between the layers: the decoder's LoRA gradients arrive first, as NaN
        (inner.head(torch.relu(inner.decoder(h))).pow(2).mean() * float("inf")).backward()
    decoder = {a.param: a for a in tracer.trace.arrivals if ".decoder." in a.param}
    assert len(decoder) == 2 and all(a.count == 1 and a.finite is False for a in decoder.values())
    assert tracer.diagnosis.root_cause.code == "nonfinite-grad"


def test_an_accumulation_stopped_by_a_later_hook_is_not_counted():
    """The user's hook after ours raises: that gradient never reaches .grad, so the parameter counts only the
    next backward's accumulation, and each parameter's norm is that of its .grad at the end."""
    model = _lora_model()
    x = torch.randn(4, 8)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    with lora_trace.trace(model) as tracer:
        handle = lora[0].register_hook(lambda grad: (_ for _ in ()).throw(RuntimeError("stop")))
        with pytest.raises(RuntimeError, match="stop"):
            model(x).backward()
        handle.remove()
        model.zero_grad(set_to_none=True)
        model(x).backward()
    names = {id(p): n for n, p in model.named_parameters()}
    arrivals = {a.param: a for a in tracer.trace.arrivals}
    assert len(arrivals) == len(lora) and arrivals[names[id(lora[0])]].count == 1
    assert all(arrivals[names[id(p)]].norm == torch.linalg.vector_norm(p.grad).item() for p in lora)


def test_a_gradient_computed_but_never_accumulated_by_a_backward_is_no_arrival():
    """A backward() whose gradient for a parameter never reached .grad (a later hook stopped it; compiled code
    that calls the hook and accumulates nothing) is no arrival: it once counted as an autograd.grad()-style
    gradient with an unknown norm, and a compiled model's detached layer read '4 of 4 got a gradient'."""
    model = _lora_model()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    with lora_trace.trace(model) as tracer:
        lora[0].register_hook(lambda grad: (_ for _ in ()).throw(RuntimeError("stop")))
        with pytest.raises(RuntimeError, match="stop"):
            model(torch.randn(4, 8)).backward()
    names = {id(p): n for n, p in model.named_parameters()}
    assert lora[0].grad is None and names[id(lora[0])] not in {a.param for a in tracer.trace.arrivals}
