"""Rounding: a step judged against the float spacing of the values' own dtype."""

import torch

from lora_trace.capture.rounding import step_rounds_away


def test_astep_rounds_away_where_it_is_under_half_the_spacing_of_the_values_own_dtype():
    ones = torch.ones(3)
    for dtype, rounds in [(torch.bfloat16, True), (torch.float16, False), (torch.float32, False)]:
        # bf16 spacing at 1.0 is 2^-7: a step of 1e-3 is lost there; fp16 (2^-10 ~ 9.8e-4) and fp32 keep it
        assert step_rounds_away(ones.to(dtype), [ones], 3 ** 0.5, 1e-3, 0.0) is rounds, dtype
    assert step_rounds_away(ones, [None], 1e-12, 1e-3, 0.0)  # no .grad left: its norm bounds every element
    assert not step_rounds_away(ones, [None, torch.ones(3)], 1e-12, 1e-3, 0.0)  # a buffer the step uses
    assert not step_rounds_away(ones, [ones * 1e-9], 1e-9, 1e-3, 0.5)  # weight decay moves it
    assert not step_rounds_away(torch.tensor([1.0, 0.0]), [torch.ones(2) * 1e-9], 1.4e-9, 1e-3, 0.0)  # a zero


def test_the_typical_step_is_compared_with_the_spacing_of_the_median_value():
    from lora_trace.capture.rounding import typical_step_rounds_away

    values = torch.tensor([1e-3, 0.05, 0.08, 0.1, 0.2])  # median 0.08: bf16 spacing 2^-11 ~ 4.9e-4
    assert typical_step_rounds_away(values.bfloat16(), None, 1.0, 1e-5)  # Adam-like: a step of ~lr
    assert not typical_step_rounds_away(values, None, 1.0, 1e-5)  # float32 keeps it
    assert not typical_step_rounds_away(values.bfloat16(), None, 1.0, 1e-3)  # a larger rate moves bf16 too
    grad = torch.full((5,), 1e-4)
    assert typical_step_rounds_away(values.bfloat16(), grad, float(grad.norm()), 1e-3)  # SGD: lr x gradient
    assert not typical_step_rounds_away(values.bfloat16(), grad, float(grad.norm()), 10.0)
