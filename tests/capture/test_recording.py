"""The gradient norm every hook and the exit use: one rule for every dtype."""

import pytest
import torch

from lora_trace.capture.recording import grad_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_grad_norm_is_taken_in_float32_or_wider(dtype):
    norm = grad_norm(torch.tensor([3.0, 4.0]).to(dtype))
    assert float(norm) == 5.0
    assert norm.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_grad_norm_of_a_complex_gradient_is_real():
    assert float(grad_norm(torch.tensor([3 + 4j]))) == 5.0


def test_an_optimizer_holds_state_only_once_an_entry_has_something():
    from lora_trace.capture.recording import holds_no_state

    param = torch.nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([param], lr=0.1)
    assert holds_no_state(sgd) is True
    sgd.state[param]  # a read of the defaultdict leaves an empty entry: still nothing held
    assert holds_no_state(sgd) is True
    adam = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(2)
    adam.step()
    assert holds_no_state(adam) is False and holds_no_state(object()) is None
