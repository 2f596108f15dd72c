"""The timeline as captured: the adapter state and training mode at each LoRA call, the flags at the end,
and (deep mode) the line of each state change, on a tiny PEFT model."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.encoder(x)).pow(2).mean()


def _model():
    torch.manual_seed(0)
    return get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["encoder.0", "encoder.2"], init_lora_weights=False))


def _codes(diagnosis):
    return [(f.code, f.severity) for f in diagnosis.findings]


def test_each_call_records_the_state_and_mode_it_ran_in():
    model = _model()
    with lora_trace.trace(model) as tracer:
        with model.disable_adapter():
            model(torch.randn(2, 4))
        model(torch.randn(2, 4)).backward()
    states = [(c.state.disabled, c.training) for c in tracer.trace.calls]
    assert states == [(True, True), (True, True), (False, True), (False, True)]
    assert len(tracer.trace.trainable_at_end) == 4 and tracer.diagnosis.ok


def test_a_model_put_in_train_mode_before_its_forward_is_not_warned():
    """The HF Trainer case: eval after from_pretrained, train() inside the step, before the forward."""
    model = _model().eval()
    with lora_trace.trace(model) as tracer:
        model.train()
        model(torch.randn(2, 4)).backward()
    assert _codes(tracer.diagnosis) == []


def test_a_model_switched_to_eval_inside_the_step_is_warned():
    model = _model()
    with lora_trace.trace(model) as tracer:
        model.eval()
        model(torch.randn(2, 4)).backward()
    model.train()
    assert ("eval-mode", "warning") in _codes(tracer.diagnosis)


def test_deep_mode_locates_the_call_that_froze_the_adapter():
    model = _model()
    with lora_trace.trace(model, deep=True) as tracer:
        for name, param in model.named_parameters():
            if "encoder.2.lora_" in name:
                param.requires_grad_(False)  # the freezing line
        model(torch.randn(2, 4)).backward()
    finding = tracer.diagnosis.findings[0]
    assert finding.code == "lora-frozen" and finding.modules == ("base_model.model.encoder.2",)
    line = next(i for i, text in enumerate(open(__file__, encoding="utf-8"), 1) if "# the freezing line" in text)
    assert finding.location.endswith(f"test_timeline_capture.py:{line}")
    assert [c.kind for c in tracer.trace.changes] == ["requires-grad"]


def test_the_default_mode_judges_by_the_state_but_names_no_line():
    model = _model()
    with lora_trace.trace(model) as tracer:
        model.merge_adapter()
        loss = model(torch.randn(2, 4))  # merged and the base frozen: nothing to run backward through
    model.unmerge_adapter()
    assert loss.grad_fn is None
    finding = tracer.diagnosis.findings[0]
    assert (finding.code, finding.adapters, finding.location) == ("adapter-inactive", ("default",), None)
    assert tracer.trace.changes == ()


@pytest.mark.parametrize("freeze_before", [True, False])
def test_an_adapter_unfrozen_by_the_step_is_seen_to_get_its_gradient(freeze_before):
    model = _model()
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(not freeze_before)
    with lora_trace.trace(model) as tracer:
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
        model(torch.randn(2, 4)).backward()
    assert len(tracer.trace.arrivals) == 4
