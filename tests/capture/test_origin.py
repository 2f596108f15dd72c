"""Where a zero or non-finite gradient was born: the dry run re-runs the step and reads the graph."""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _model():
    torch.manual_seed(0)
    model = get_peft_model(_Net(), LoraConfig(r=2, target_modules=["fc1", "fc2"], init_lora_weights=False))
    return model, torch.randn(3, 4)


def _line_of(fragment):
    with open(__file__, encoding="utf-8") as handle:
        return next(i for i, text in enumerate(handle, 1) if fragment in text and "_line_of" not in text)


def test_a_zero_mask_is_named_at_its_op_and_line():
    model, x = _model()
    mask = torch.zeros(3, 1)

    def step(m):
        return (m(x) * mask).pow(2).sum() + x.sum()  # zero mask here

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "grad-zero" and finding.evidence["born_at"] == "mul"
    assert finding.location.endswith(f"test_origin.py:{_line_of('# zero mask here')}")


def test_an_infinite_gradient_from_a_finite_forward_is_named_at_its_op():
    model, x = _model()

    def step(m):
        return torch.sqrt((m(x) * 0).pow(2).sum())  # sqrt at zero

    finding = next(f for f in lora_trace.diagnose(model, step).findings if f.code == "nonfinite-grad")
    assert finding.evidence == {"born_at": "sqrt", "born_in": "nonfinite"}
    assert finding.location.endswith(f"test_origin.py:{_line_of('# sqrt at zero')}")


def test_a_non_finite_forward_is_named_at_the_first_op_that_produced_it():
    model, x = _model()

    def step(m):
        out = m(x)
        return torch.log(out - out).sum()  # log of zero

    finding = next(f for f in lora_trace.diagnose(model, step).findings if f.code == "nonfinite-grad")
    assert finding.evidence == {"born_at": "log", "born_in": "forward-nonfinite"}
    assert finding.location.endswith(f"test_origin.py:{_line_of('# log of zero')}")


def test_the_re_run_leaves_the_model_exactly_as_it_was():
    model, x = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    lora_trace.diagnose(model, lambda m: (m(x) * torch.zeros(3, 1)).sum() + x.sum())
    assert all(torch.equal(before[n], p) and p.grad is None for n, p in model.named_parameters())
    assert torch.equal(rng, torch.get_rng_state())


def test_a_zero_that_comes_from_a_zero_input_names_no_op():
    """LoRA dropout 1.0 zeroes the adapter's input, not a gradient: the configuration explains it, no op does."""
    torch.manual_seed(0)
    model = get_peft_model(_Net(), LoraConfig(r=2, target_modules=["fc1", "fc2"], lora_dropout=1.0,
                                               init_lora_weights=False))
    x = torch.randn(3, 4)
    finding = lora_trace.diagnose(model, lambda m: m(x).pow(2).sum()).findings[0]
    assert finding.code == "grad-zero" and "born_at" not in finding.evidence and finding.location is None


def test_a_step_that_cannot_run_twice_keeps_the_first_diagnosis():
    model, x = _model()
    batches = iter([x])

    def step(m):
        return (m(next(batches)) * torch.zeros(3, 1)).sum() + x.sum()  # raises StopIteration the second time

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "grad-zero" and finding.location is None


class _TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.l1(x) * 0 + self.l2(x)  # l1 zeroed; l2 healthy


def test_a_healthy_layer_at_initialisation_beside_the_zeroed_one_is_not_named():
    """Found in review: at initialisation every healthy layer's lora_B linear also passes back a zero (to lora_A),
    so only the paths from the parameters the finding is about are searched."""
    torch.manual_seed(0)
    model = get_peft_model(_TwoBranches(), LoraConfig(r=2, target_modules=["l1", "l2"]))
    x = torch.randn(3, 4)
    finding = next(f for f in lora_trace.diagnose(model, lambda m: m(x).pow(2).mean()).findings
                   if f.code == "grad-zero")
    assert finding.evidence["born_at"] == "mul"
    assert finding.location.endswith(f"test_origin.py:{_line_of('# l1 zeroed; l2 healthy')}")
