"""PEFT internals read by discovery: the all-zero check is exact at the edges of floating point."""

import torch

from lora_trace.capture.peft import _all_zero_flags


def test_all_zero_is_exact_for_tiny_nan_empty_mixed_dtypes_and_meta():
    params = [torch.zeros(3), torch.tensor([0.0, 1e-45]), torch.tensor([float("nan")]), torch.zeros(0),
              torch.tensor([-1.0, 1.0]), torch.zeros(2, dtype=torch.bfloat16),
              torch.tensor([0, 1e-320], dtype=torch.float64),
              torch.tensor([6e-8], dtype=torch.float16), torch.zeros(2, device="meta")]
    assert _all_zero_flags(params)[0] == [True, False, False, True, False, True, False, False, None]


def test_all_zero_takes_integer_float8_sparse_and_complex_tensors():
    """A frozen adapter may be stored quantised (uint8, float8) or sparse: the summed check does not take those."""
    params = [torch.zeros(2, dtype=torch.uint8), torch.tensor([0, 3], dtype=torch.uint8),
              torch.zeros(2).to(torch.float8_e4m3fn), torch.tensor([0.0, 2.0]).to(torch.float8_e4m3fn),
              torch.zeros(3, 3).to_sparse(), torch.eye(2).to_sparse(), torch.zeros(2, dtype=torch.complex64),
              torch.tensor([0, 1j], dtype=torch.complex64)]
    assert _all_zero_flags(params)[0] == [True, False, True, False, True, False, True, False]


def test_a_sharded_parameter_is_judged_on_its_shard_only(single_rank_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    params = [torch.nn.Parameter(distribute_tensor(torch.zeros(4, 2), mesh, [Shard(0)])),
              torch.nn.Parameter(distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)])), torch.zeros(2)]
    assert _all_zero_flags(params) == ([None, None, True], [True, False, None])


def test_zeros_at_start_changes_only_all_zero_and_keeps_every_other_field():
    import dataclasses

    from lora_trace.capture.peft import zeros_at_start
    from lora_trace.core.records import LoraParam, LoraSite

    params = (LoraParam("m.lora_A.x.weight", "x", "lora_A", 8, True, None),
              LoraParam("m.lora_B.x.weight", "x", "lora_B", 8, False, None, shard_zero=True))
    site = LoraSite("m", "speech", "Conv1d", ("x", "y"), ("x",), False, True, (("x", 2.0),), params, tuner="LoHa",
                    shared=("other.lora_A.x.weight",))
    values = {"m.lora_B.x.weight": torch.zeros(2, 4)}
    (filled,) = zeros_at_start((site,), {"m.lora_B.x.weight"}, values.get)
    assert filled == dataclasses.replace(site, params=(params[0], dataclasses.replace(params[1], all_zero=True)))
    assert zeros_at_start((site,), {"m.lora_A.x.weight"}, values.get)[0] is site  # no start value: unknown
