"""Report lines that were wrong in real stacks (issue 15, items 4 and 7): each checked on a real traced step."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

import lora_trace


def _model(seed: int = 0):
    torch.manual_seed(seed)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    return get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def _ids():
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))


def _step_lines(report: str, number: int) -> list[str]:
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if f"Step {number}/7" in line)
    return lines[start:next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  "))]


def test_a_loss_computed_outside_the_model_with_backward_in_the_block_gets_no_no_loss_note():
    """Lightning and custom loops compute the loss from the model's output outside it."""
    model = _model()
    with lora_trace.trace(model) as t:
        logits = model(input_ids=_ids()).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), _ids().flatten()).backward()
    assert "note.no-loss" not in t.diagnosis.trace.notes and t.diagnosis.trace.backward
    assert "no loss was seen" not in t.diagnosis.report()


def test_a_detach_before_a_trainable_head_says_backward_ran_and_step_5_passes():
    """The LoRA layers ran with grad; the cut is after them. Backward reached the trainable head, so it ran.
    The module traced holds both, as a LightningModule or a contrastive model does."""
    model = torch.nn.ModuleDict({"lm": _model(), "head": torch.nn.Linear(64, 1)})
    with lora_trace.trace(model) as t:
        logits = model["lm"](input_ids=_ids()).logits.detach()
        model["head"](logits).sum().backward()
    report = t.diagnosis.report()
    assert t.diagnosis.trace.backward, report
    assert _step_lines(report, 5)[0].startswith("[ ok ]"), report
    assert _step_lines(report, 6)[0].startswith("[FAIL]"), report
    assert "no gradient reached" not in report and "no backward ran" not in report


def test_step_1_names_each_adapter_with_its_tuner_and_rank():
    model = _model()
    with lora_trace.trace(model) as t:
        model(input_ids=_ids(), labels=_ids()).loss.backward()
    step1 = _step_lines(t.diagnosis.report(), 1)
    assert step1[1].strip() == "PEFT configs: default (LORA, r=4)", step1


def test_the_grad_disabled_fix_does_not_assume_a_self_in_a_plain_function():
    model = _model()

    def encode(ids):  # a plain function: there is no `self` to take `.training` from
        with torch.no_grad():
            return model(input_ids=ids).logits

    with lora_trace.trace(model) as t:
        loss = encode(_ids()).sum()
    finding = next(f for f in t.diagnose(loss=loss).findings if f.code == "grad-disabled")
    assert "set_grad_enabled(model.training)" in finding.fix and "self.training` inside a module" in finding.fix


def test_the_steps_name_the_tuner_the_model_uses():
    """Issue 19: the seven steps said "LoRA layers" for every tuner; a LoHa model's report says LoHa."""
    from peft import LoHaConfig

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    model = get_peft_model(Qwen2ForCausalLM(config), LoHaConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with lora_trace.trace(model) as t:
        model(input_ids=_ids(), labels=_ids()).loss.backward()
    report = t.diagnosis.report()
    assert "LoHa layers: 4" in report and "trainable LoHa parameters got a gradient" in report, report
    assert "LoRA" not in report and "lora_" not in report.replace("lora_trace.", ""), report  # findings too
    zh = t.diagnosis.report(lang="zh")
    assert "LoHa 层" in zh and "LoRA" not in zh, zh
    page = t.diagnosis._repr_html_()
    assert "LoHa layers" in page and "LoRA" not in page.replace("lora-trace", "")


def _paired():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    return get_peft_model(model, LoraConfig(r=2, target_modules=["0", "2"]))


def test_two_calls_before_one_backward_are_not_called_an_accumulation_window():
    """A contrastive step encodes two batches, then one loss: gradients arrive after the last call only. Three
    backward passes, one per call, are the accumulation window."""
    model = _paired()
    with lora_trace.trace(model) as paired:
        a, b = model(torch.randn(3, 8)), model(torch.randn(3, 8))
        torch.nn.functional.cross_entropy(a @ b.T, torch.arange(3)).backward()
    assert "2 calls of the model, gradients arrived after the last only: 0, 4 of 4" in paired.diagnosis.report()
    assert "accumulation window" not in paired.diagnosis.report()
    with lora_trace.trace(model) as window:
        for _ in range(3):
            model(torch.randn(3, 8)).sum().backward()
    assert "3 calls of the model (an accumulation window); gradients arrived after each: 4, 4, 4" in \
        window.diagnosis.report()
    with lora_trace.trace(model) as logged:  # a step, then a forward for a log line: neither of the above
        model(torch.randn(3, 8)).sum().backward()
        with torch.no_grad():
            model(torch.randn(3, 8))
    assert "2 calls of the model; gradients arrived after each: 4, 0 of 4" in logged.diagnosis.report()


def test_a_model_peft_wraps_without_a_task_type_is_traversed_where_its_layers_ran():
    """PeftModel.forward calls the wrapped model directly, not the tuner that names its region: the region ran."""
    model = _paired()
    with lora_trace.trace(model) as tracer:
        model(torch.randn(3, 8)).sum().backward()
    assert tracer.trace.regions_run == ("base_model",)
    assert "base_model: holds 2 LoRA layers, traversed, 2 run with grad" in tracer.diagnosis.report()
