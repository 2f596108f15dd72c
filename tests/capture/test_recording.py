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
