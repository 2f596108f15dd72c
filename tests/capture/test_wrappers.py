"""Names are relative to what the user passed: DDP's `module.` prefix never shows."""

import torch

import lora_trace
from lora_trace.scenarios import contrastive_qwen2_audio


def test_a_ddp_wrapped_model_is_traced_with_unwrapped_names(single_rank_group):
    scenario = contrastive_qwen2_audio(fault="no-grad")
    ddp = torch.nn.parallel.DistributedDataParallel(scenario.model, find_unused_parameters=True)
    diagnosis = lora_trace.diagnose(ddp, lambda model: model(scenario.batch))
    assert diagnosis.codes("error") == ("grad-disabled", "lora-bypassed")
    assert all(m.startswith("speech_encoder.") for f in diagnosis.findings[:2] for m in f.modules)
    assert not any(m.startswith("module.") for f in diagnosis.findings for m in f.modules)
    assert {a.param for a in diagnosis.trace.arrivals} == scenario.truth.grad_params


def test_an_fsdp2_sharded_model_is_traced(single_rank_group):
    """fully_shard on CPU with gloo (one rank here): parameters are DTensors, gradients are per-rank shards."""
    from peft import LoraConfig, get_peft_model
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(8, 8)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            return self.head(torch.relu(self.encoder(x))).pow(2).mean()

    torch.manual_seed(0)
    model = get_peft_model(Model(), LoraConfig(r=2, target_modules=["encoder"]))
    fully_shard(model)
    with lora_trace.trace(model, deep=True) as tracer:
        model(torch.randn(2, 8)).backward()
    diagnosis = tracer.diagnosis
    assert diagnosis.ok
    assert {a.param.rsplit(".", 2)[0].rsplit(".", 1)[-1] for a in diagnosis.trace.arrivals} == {"lora_A", "lora_B"}
    assert all(p.all_zero is None for s in diagnosis.trace.sites for p in s.params)  # sharded: not claimed
