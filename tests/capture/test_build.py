"""Building the trace: gradient norms read with one synchronisation, whatever devices they sit on."""

import torch

from lora_trace.capture.build import _norm_values
from lora_trace.capture.recording import GradCounter


def test_norms_on_one_device_are_read_at_once_and_meta_or_missing_ones_stay_unknown():
    one = {"a": GradCounter(1, torch.tensor(1.0)), "b": GradCounter(1, torch.tensor(0.0))}
    assert _norm_values(one, sorted(one)) == {"a": 1.0, "b": 0.0}
    mixed = {"a": GradCounter(1, torch.tensor(1.0)), "b": GradCounter(1, torch.tensor(2.0, device="meta")),
             "c": GradCounter(1, torch.tensor(3.0)), "d": GradCounter(1, None)}
    assert _norm_values(mixed, sorted(mixed)) == {"a": 1.0, "b": None, "c": 3.0, "d": None}
