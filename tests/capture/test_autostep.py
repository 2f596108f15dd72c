"""The step finder behind `lora-trace run`, in process: global hooks only while needed, the right model, the
optimizer found by its step hooks (also when the forward runs inside step(closure), as Lightning does)."""

import copy

import torch
from torch.nn.modules import module as torch_module
from torch.optim import optimizer as torch_optimizer

import lora_trace
from lora_trace.capture.autostep import AutoSteps

from ..helpers import hook_snapshot


def _model():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    return get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def _ids():
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))


def _global_hooks():
    return (len(torch_module._global_forward_pre_hooks), len(torch_module._global_forward_hooks),
            len(torch_optimizer._global_optimizer_pre_hooks), len(torch_optimizer._global_optimizer_post_hooks))


def _finder(steps=1):
    seen = []
    finder = AutoSteps(steps=steps, deep=False, on_step=lambda step, diagnoses, error: seen.append((step, diagnoses)))
    finder.install()
    return finder, seen


def test_k_steps_traced_then_every_global_hook_is_gone():
    before = _global_hooks()
    model = _model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    finder, seen = _finder(steps=2)
    for _ in range(4):
        model(input_ids=_ids(), labels=_ids()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert [step for step, _ in seen] == [0, 1] and finder.optimizer_steps == 2  # counting stops with the hooks
    assert _global_hooks() == before and hook_snapshot(model) == hook_snapshot(_model())
    for _, (diagnosis,) in seen:
        assert diagnosis.ok and diagnosis.trace.optimizer_steps == 1 and diagnosis.trace.optimizer is not None


def test_a_frozen_reference_copy_called_first_and_an_evaluation_are_not_the_model():
    policy = _model()
    reference = copy.deepcopy(policy).requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    finder, seen = _finder()
    policy.eval()
    with torch.no_grad():
        policy(input_ids=_ids())  # an evaluation before training: no step starts
    policy.train()
    assert not finder.tracing
    with torch.no_grad():
        reference(input_ids=_ids())
    policy(input_ids=_ids(), labels=_ids()).loss.backward()
    optimizer.step()
    (_, diagnoses), = seen
    (diagnosis,) = diagnoses
    assert diagnosis.trace.sites[0].params[0].requires_grad and diagnosis.ok, diagnosis.report()


def test_the_forward_inside_optimizer_step_closure_is_one_traced_step_with_its_optimizer():
    model = _model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    finder, seen = _finder()

    def closure():
        loss = model(input_ids=_ids(), labels=_ids()).loss
        loss.backward()
        return loss

    optimizer.step(closure)
    (_, (diagnosis,)), = seen
    assert diagnosis.trace.optimizer_steps == 1 and diagnosis.trace.optimizer.updated, diagnosis.report()


def test_a_model_the_script_traces_itself_is_left_to_it():
    before = _global_hooks()
    model = _model()
    finder, seen = _finder()
    with lora_trace.trace(model) as t:
        model(input_ids=_ids(), labels=_ids()).loss.backward()
    finder.finish(None)
    assert t.diagnosis.ok and seen == [] and _global_hooks() == before


def test_an_optimizer_built_for_the_head_inside_the_model_leaves_the_adapter_out():
    class WithHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm, self.head = _model(), torch.nn.Linear(64, 1)

        def forward(self, ids):
            return self.head(self.lm(input_ids=ids).logits).sum()

    model = WithHead()
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-3)  # built for the head only
    finder, seen = _finder()
    model(_ids()).backward()
    optimizer.step()
    finder.finish(None)  # the adapters' optimizer never stepped: the step ends at exit (or the next step)
    (_, (diagnosis,)), = seen
    assert diagnosis.root_cause.code == "not-in-optimizer", diagnosis.report()


def test_optimizers_holding_none_of_the_model_are_no_false_alarm():
    """A master-weight optimizer (fp32 copies) or one for a module outside the model: the update is not
    checked (counted in `foreign`, said by lora-trace run), never reported as the adapter left out."""
    model = _model()
    copies = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(copies, lr=1e-3)
    finder, seen = _finder()
    model(input_ids=_ids(), labels=_ids()).loss.backward()
    for copy_, param in zip(copies, [p for p in model.parameters() if p.requires_grad], strict=True):
        copy_.grad = param.grad.clone()
    optimizer.step()
    finder.finish(None)
    (_, (diagnosis,)), = seen
    assert diagnosis.ok and finder.foreign == 1, diagnosis.report()


def test_a_head_optimizer_stepping_before_the_adapters_one_is_no_false_alarm():
    model = _model()
    head = [model.base_model.model.lm_head.weight.requires_grad_(True)]
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    head_optimizer, lora_optimizer = torch.optim.AdamW(head, lr=1e-3), torch.optim.AdamW(lora, lr=1e-3)
    finder, seen = _finder()
    model(input_ids=_ids(), labels=_ids()).loss.backward()
    head_optimizer.step()
    lora_optimizer.step()
    (_, (diagnosis,)), = seen
    assert diagnosis.codes("error") == () and diagnosis.trace.optimizer_steps == 1, diagnosis.report()


def test_an_evaluation_after_the_last_traced_step_is_no_step():
    """Ending normally inside a step that ran no backward and no optimizer step (generation at the end of a
    script, with more steps asked for than the script ran) is dropped, not judged as a failed step."""
    model = _model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    finder, seen = _finder(steps=3)
    model(input_ids=_ids(), labels=_ids()).loss.backward()
    optimizer.step()
    with torch.no_grad():
        model(input_ids=_ids())  # train mode, grad off: looks like the start of a step
    finder.finish(None)
    assert [step for step, _ in seen] == [0] and seen[0][1][0].ok


def test_a_model_called_inside_another_traced_one_gives_one_run_the_outer_one():
    """TRL's GRPO generates through the base model, then trains through the PeftModel around it."""
    model = _model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    finder, seen = _finder()
    with torch.no_grad():
        model.base_model.model(input_ids=_ids())  # the inner model first, in train mode (generation)
    model(input_ids=_ids(), labels=_ids()).loss.backward()
    optimizer.step()
    (_, (diagnosis,)), = seen
    assert diagnosis.trace.model_class == "PeftModelForCausalLM" or diagnosis.trace.model_class == "PeftModel"
    assert diagnosis.ok, diagnosis.report()


def test_a_step_closed_as_the_next_starts_does_not_break_that_call():
    """An optimizer that holds none of the adapter (built before get_peft_model) never ends the step, so the
    next forward's global pre-hook closes it: torch has listed the closed trace's kwargs hooks for that call
    already and calls them without kwargs. That raised a TypeError in the user's script."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    base = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=64))
    optimizer = torch.optim.AdamW(base.parameters(), lr=1e-3)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    finder, seen = _finder(steps=2)
    try:
        for _ in range(3):
            model(input_ids=_ids(), labels=_ids()).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        finder.finish(None)
    assert [step for step, _ in seen] == [0, 1]
    for _, (diagnosis,) in seen:
        assert diagnosis.trace.error is None and "not-in-optimizer" in diagnosis.codes("error")
