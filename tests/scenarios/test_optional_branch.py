"""A LoRA layer the model's own forward calls only for some inputs, beside one whose base weight user code uses
directly: in default mode both look the same (the parent ran, the layer did not), so neither is an error there;
deep mode tells them apart (found by a new-user trial: the healthy branch was a lora-bypassed error)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace


class _Model(nn.Module):
    def __init__(self, direct: bool):
        super().__init__()
        self.text, self.img, self.out = nn.Linear(16, 16), nn.Linear(8, 16), nn.Linear(16, 4)
        self.direct = direct

    def forward(self, x, img=None, y=None):
        h = torch.relu(self.text(x))
        if img is not None:  # the model's own branch: an image tower for batches that have one
            h = h + self.img(img)
        if self.direct:  # a bypass: the wrapped linear's base weight, around its LoRA
            h = h + nn.functional.linear(x[:, :8], self.img.base_layer.weight)
        return nn.functional.cross_entropy(self.out(h), y)


def _diagnosis(direct: bool, deep: bool):
    torch.manual_seed(0)
    model = get_peft_model(_Model(direct), LoraConfig(r=4, target_modules=["text", "img", "out"]))
    x, y = torch.randn(4, 16), torch.randint(0, 4, (4,))
    with lora_trace.trace(model, deep=deep) as tracer:
        model(x, img=None, y=y).backward()
    return tracer.diagnosis


@pytest.mark.parametrize("direct", [False, True])
def test_default_mode_warns_that_it_cannot_tell_a_skip_from_a_bypass(direct):
    diagnosis = _diagnosis(direct, deep=False)
    (finding,) = [f for f in diagnosis.findings if f.code == "lora-bypassed"]
    assert diagnosis.ok and finding.severity == "warning" and finding.evidence["unsure"]
    assert "cannot tell which" in finding.message and "deep=True" in finding.fix
    assert "[warn] Step 6/7" in diagnosis.report()


def test_deep_mode_tells_them_apart():
    healthy, bypassed = _diagnosis(False, deep=True), _diagnosis(True, deep=True)
    assert healthy.ok and "skipped-by-model" in healthy.codes("info") and "lora-bypassed" not in healthy.codes()
    assert bypassed.codes("error") == ("lora-bypassed",) and bypassed.findings[0].location is not None
