"""PEFT internals read by discovery: the all-zero check is exact at the edges of floating point."""

import torch

from lora_trace.capture.peft import _all_zero_flags


def test_all_zero_is_exact_for_tiny_nan_empty_mixed_dtypes_and_meta():
    params = [torch.zeros(3), torch.tensor([0.0, 1e-45]), torch.tensor([float("nan")]), torch.zeros(0),
              torch.tensor([-1.0, 1.0]), torch.zeros(2, dtype=torch.bfloat16),
              torch.tensor([0, 1e-320], dtype=torch.float64),
              torch.tensor([6e-8], dtype=torch.float16), torch.zeros(2, device="meta")]
    assert _all_zero_flags(params) == [True, False, False, True, False, True, False, False, None]
