"""Rounding: a step judged against the float spacing of the values' own dtype."""

import torch

from lora_trace.capture.rounding import step_rounds_away, typical_step_rounds_away


def test_a_step_rounds_away_where_it_is_under_half_the_spacing_of_the_values_own_dtype():
    ones = torch.ones(3)
    for dtype, rounds in [(torch.bfloat16, True), (torch.float16, False), (torch.float32, False)]:
        # bf16 spacing at 1.0 is 2^-7: a step of 1e-3 is lost there; fp16 (2^-10 ~ 9.8e-4) and fp32 keep it
        assert step_rounds_away(ones.to(dtype), ones, [], 3 ** 0.5, 1e-3, 0.0) is rounds, dtype
    assert step_rounds_away(ones, None, [], 1e-12, 1e-3, 0.0)  # the gradient unknown: its norm bounds each element
    assert not step_rounds_away(ones, None, [torch.ones(3)], 1e-12, 1e-3, 0.0)  # a buffer the step uses
    assert not step_rounds_away(ones, ones * 1e-9, [], 1e-9, 1e-3, 0.5)  # weight decay moves it
    assert not step_rounds_away(torch.tensor([1.0, 0.0]), torch.ones(2) * 1e-9, [], 1.4e-9, 1e-3, 0.0)  # a zero


def test_nesterov_steps_by_the_gradient_plus_the_buffer_so_the_bound_adds_them():
    """lr (g + m buf) can exceed lr max(|g|, |buf|): the bound is the sum, never the larger of the two."""
    values = torch.full((3,), 1.0)  # float32 spacing at 1.0: 1.19e-7, half 5.96e-8
    grad, buffer = torch.full((3,), 4e-5), torch.full((3,), 4e-5)  # lr 1e-3: 4e-8 each, 8e-8 together
    assert not step_rounds_away(values, grad, [buffer], float(grad.norm()), 1e-3, 0.0)
    assert step_rounds_away(values, grad, [], float(grad.norm()), 1e-3, 0.0)


def test_the_typical_step_is_compared_with_the_spacing_of_the_median_value():
    values = torch.tensor([1e-3, 0.05, 0.08, 0.1, 0.2])  # median 0.08: bf16 spacing 2^-11 ~ 4.9e-4
    assert typical_step_rounds_away(values.bfloat16(), None, [], 1.0, 1e-5, normalises=True)  # Adam: ~lr
    assert not typical_step_rounds_away(values, None, [], 1.0, 1e-5, normalises=True)  # float32 keeps it
    assert not typical_step_rounds_away(values.bfloat16(), None, [], 1.0, 1e-3, normalises=True)  # a larger rate
    grad = torch.full((5,), 1e-4)
    assert typical_step_rounds_away(values.bfloat16(), grad, [], float(grad.norm()), 1e-3, normalises=False)
    assert not typical_step_rounds_away(values.bfloat16(), grad, [], float(grad.norm()), 10.0, normalises=False)
    assert not typical_step_rounds_away(values.bfloat16(), grad, [torch.ones(5)], float(grad.norm()), 1e-3,
                                        normalises=False)  # momentum's buffer is part of SGD's step
    assert not typical_step_rounds_away(values, grad * 1e-6, [], float(grad.norm()) * 1e-6, 1e-3, 0.5,
                                        normalises=False)  # weight decay moves the typical value
    assert typical_step_rounds_away(values, grad * 1e-6, [], float(grad.norm()) * 1e-6, 1e-3, normalises=False)


def test_a_dtype_without_float_spacing_support_is_not_judged():
    for values in (torch.ones(3).to(torch.float8_e4m3fn), torch.ones(3, dtype=torch.int64), torch.ones(0)):
        assert not step_rounds_away(values, None, [], 1e-30, 1e-3, 0.0)
        assert not typical_step_rounds_away(values, None, [], 1e-30, 1e-3, normalises=True)
