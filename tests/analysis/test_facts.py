"""Facts read from a real traced step: what an optimizer step proves when no backward was seen."""

import torch
from peft import LoraConfig, get_peft_model

import lora_trace

from ..capture.conftest import TwoLayers


def _step(*, detach: bool, backward_before: bool = False):
    torch.manual_seed(0)
    model = get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder", "decoder"],
                                                   init_lora_weights=False))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    head = torch.nn.Linear(8, 1)  # outside the model: the loss is computed beyond it
    inner = model.base_model.model
    x = torch.randn(4, 8)

    def loss():
        hidden = inner.decoder(torch.relu(inner.encoder(x)))
        return head(hidden.detach() if detach else hidden).pow(2).mean()

    if backward_before:  # gradients accumulated before the block: the block only steps
        loss().backward()
    with lora_trace.trace(model, optimizer=optimizer) as tracer:
        if not backward_before:
            loss().backward()
        optimizer.step()
        optimizer.zero_grad()
    return tracer.diagnosis


def test_an_optimizer_step_over_lora_that_got_no_gradient_is_an_error_without_deep_mode():
    """The loss is computed outside the model from detached hidden states: no backward reaches the model, but
    the optimizer stepped the LoRA parameters and they did not move, which proves they learned nothing."""
    diagnosis = _step(detach=True)
    assert diagnosis.root_cause.code == "lora-off-path"
    assert "the optimizer stepped 4 trainable LoRA parameters" in diagnosis.report()


def test_a_healthy_loss_outside_the_model_and_a_block_that_only_steps_are_no_error():
    assert _step(detach=False).codes("error") == ()
    assert _step(detach=False, backward_before=True).codes("error") == ()  # the step moved them
