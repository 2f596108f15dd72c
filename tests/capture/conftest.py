"""Shared by the capture tests: a two-layer model to put adapters on, and a one-rank gloo process group."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.decoder = nn.Linear(8, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(torch.relu(self.decoder(torch.relu(self.encoder(x))))).pow(2).mean()


@pytest.fixture
def single_rank_group():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
