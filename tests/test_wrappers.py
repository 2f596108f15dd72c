"""Names are relative to what the user passed: DDP's `module.` prefix never shows."""

import os
import socket

import pytest
import torch
import torch.distributed as dist

import lora_trace
from lora_trace.scenarios import contrastive_qwen2_audio


@pytest.fixture
def single_rank_group():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_ddp_wrapped_model_is_traced_with_unwrapped_names(single_rank_group):
    scenario = contrastive_qwen2_audio(fault="no-grad")
    ddp = torch.nn.parallel.DistributedDataParallel(scenario.model, find_unused_parameters=True)
    diagnosis = lora_trace.diagnose(ddp, lambda model: model(scenario.batch))
    assert diagnosis.codes("error") == ("grad-disabled", "lora-bypassed")
    assert all(m.startswith("speech_encoder.") for f in diagnosis.findings[:2] for m in f.modules)
    assert not any(m.startswith("module.") for f in diagnosis.findings for m in f.modules)
    assert {a.param for a in diagnosis.trace.arrivals} == scenario.truth.grad_params
