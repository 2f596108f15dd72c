"""Random small models for the property tests: regions of blocks, some Linear layers LoRA-wrapped by PEFT,
and at most one injected cut. The forward code is real code in this file, each cut statement on its own
line tagged `# fault: <kind>`, so the diagnosis can point at it and the test can find it with marked_line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.utils.checkpoint import checkpoint

REGION_NAMES = ("encoder_a", "encoder_b", "encoder_c")
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu, "identity": lambda t: t}

# Cuts placed at one block of one region (the cut's `region` and `block` say where).
BLOCK_CUTS = ("no-grad-block", "detach", "data", "numpy", "bypass-linear", "skip", "off-path", "checkpoint",
              "detach-branch", "disabled-block", "merged-block")
# Cuts placed around one region. "no-grad-reference" is an extra no_grad pass over a region (a frozen
# reference model) beside the normal one: it starves nothing, so it is never an error.
REGION_CUTS = ("no-grad-region", "no-grad-reference")
CUT_KINDS = BLOCK_CUTS + REGION_CUTS + ("frozen",)

# What a correct diagnosis names for each injected cut, and the function holding its tagged line
# (None: the cause has no line of its own to point at).
EXPECTED_CODE = {
    "no-grad-block": "grad-disabled",
    "no-grad-region": "grad-disabled",
    "detach": "detached",
    "detach-branch": "detached",
    "data": "detached",
    "numpy": "detached",
    "bypass-linear": "lora-bypassed",
    "skip": "lora-bypassed",
    "off-path": "lora-off-path",
    "checkpoint": "checkpoint-no-grad",
    "frozen": "lora-frozen",
    "no-grad-reference": None,
    "disabled-block": "adapter-inactive",  # the adapter state changed during the step, around one block
    "merged-block": "adapter-inactive",
}


@contextmanager
def adapters_off(block: nn.Module, how: str) -> Iterator[None]:
    """PEFT's own switches on the LoRA layers of one block, for the block's forward only."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in block.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        if how == "disabled-block":
            layer.enable_adapters(False)  # fault: disabled-block
        else:
            layer.merge()  # fault: merged-block
    try:
        yield
    finally:
        for layer in layers:
            if how == "disabled-block":
                layer.enable_adapters(True)
            else:
                layer.unmerge()


@dataclass(frozen=True)
class BlockSpec:
    two_branch: bool  # a second Linear `alt` on the same input, summed with the first branch
    act: str


@dataclass(frozen=True)
class Cut:
    kind: str
    region: int = 0
    block: int = 0
    layer: str | None = None  # "frozen": the LoRA-wrapped module (name relative to Model) to freeze


@dataclass(frozen=True)
class Spec:
    dim: int
    topology: str  # "chain": regions one after the other; "parallel": each region reads x, outputs summed
    residual: bool  # blocks add their output to their input
    regions: tuple[tuple[BlockSpec, ...], ...]
    targets: tuple[str, ...]  # exact module names (relative to Model) LoRA-wrapped by PEFT
    head_trainable: bool
    cut: Cut | None
    seed: int


def linear_names(regions: tuple[tuple[BlockSpec, ...], ...]) -> list[str]:
    names = []
    for r, blocks in enumerate(regions):
        for b, block in enumerate(blocks):
            names.append(f"{REGION_NAMES[r]}.blocks.{b}.fc")
            if block.two_branch:
                names.append(f"{REGION_NAMES[r]}.blocks.{b}.alt")
    names.append("head")
    return names


class Block(nn.Module):
    def __init__(self, dim: int, spec: BlockSpec, fault: str | None) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.alt = nn.Linear(dim, dim) if spec.two_branch else None
        self.act = spec.act
        self.fault = fault  # "bypass-linear" | "detach-branch" | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.act]
        if self.fault == "bypass-linear":
            y = F.linear(x, self.fc.weight, self.fc.bias)  # fault: bypass-linear
        else:
            y = self.fc(x)
        y = act(y)
        if self.fault == "detach-branch":
            y = y.detach()  # fault: detach-branch
        if self.alt is not None:
            y = y + act(self.alt(x))
        return y


class Region(nn.Module):
    def __init__(self, dim: int, blocks: tuple[BlockSpec, ...], residual: bool, cut: Cut | None) -> None:
        super().__init__()
        inside = cut.kind if cut is not None and cut.kind in ("bypass-linear", "detach-branch") else None
        self.blocks = nn.ModuleList(Block(dim, spec, inside if cut is not None and cut.block == i else None)
                                    for i, spec in enumerate(blocks))
        self.residual = residual
        self.cut = cut  # the cut placed in this region, if any

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            kind = self.cut.kind if self.cut is not None and self.cut.block == index else None
            if kind == "skip":
                continue  # fault: skip
            if kind == "off-path":
                block(h)  # fault: off-path
                continue
            if kind == "no-grad-block":
                with torch.no_grad():  # fault: no-grad-block
                    out = block(h)
            elif kind == "checkpoint":
                out = checkpoint(block, h, use_reentrant=True)  # fault: checkpoint
            elif kind in ("disabled-block", "merged-block"):
                with adapters_off(block, kind):
                    out = block(h)
            else:
                out = block(h)
            if kind == "detach":
                out = out.detach()  # fault: detach
            elif kind == "data":
                out = out.data  # fault: data
            elif kind == "numpy":
                out = torch.from_numpy(out.detach().numpy())  # fault: numpy
            h = h + out if self.residual else out
        return h


class Model(nn.Module):
    def __init__(self, spec: Spec) -> None:
        super().__init__()
        cut = spec.cut
        self.region_names = REGION_NAMES[: len(spec.regions)]
        for index, (name, blocks) in enumerate(zip(self.region_names, spec.regions, strict=True)):
            here = cut if cut is not None and cut.kind in BLOCK_CUTS and cut.region == index else None
            self.add_module(name, Region(spec.dim, blocks, spec.residual, here))
        self.head = nn.Linear(spec.dim, 1)
        self.topology = spec.topology
        self.no_grad_region = cut.region if cut is not None and cut.kind == "no-grad-region" else None
        self.reference_region = cut.region if cut is not None and cut.kind == "no-grad-reference" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        outputs = []
        for index, name in enumerate(self.region_names):
            region = getattr(self, name)
            given = x if self.topology == "parallel" else h
            if index == self.no_grad_region:
                with torch.no_grad():  # fault: no-grad-region
                    h = region(given)
            else:
                h = region(given)
            if index == self.reference_region:
                with torch.no_grad():  # fault: no-grad-reference
                    reference = region(given)
                h = h + 0.5 * reference
            outputs.append(h)
        if self.topology == "parallel":
            h = torch.stack(outputs).sum(0)
        return self.head(h).pow(2).mean()


# Where each kind's tagged line lives.
FAULT_FUNCTION = {
    "no-grad-block": Region.forward,
    "no-grad-region": Model.forward,
    "no-grad-reference": Model.forward,
    "detach": Region.forward,
    "detach-branch": Block.forward,
    "data": Region.forward,
    "numpy": Region.forward,
    "bypass-linear": Block.forward,
    "checkpoint": Region.forward,  # the line that called checkpoint(): the boundary is the cause
    "disabled-block": adapters_off.__wrapped__,  # deep mode sees the call that changed the state
    "merged-block": adapters_off.__wrapped__,
}


def build(spec: Spec) -> tuple[nn.Module, torch.Tensor]:
    """The PEFT model (a PeftModel over Model) and a batch of 2, deterministic in spec.seed."""
    torch.manual_seed(spec.seed)
    base = Model(spec)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=list(spec.targets)))
    inner = model.base_model.model
    if spec.head_trainable:
        for name, param in inner.head.named_parameters():
            if "lora_" not in name:
                param.requires_grad_(True)
    if spec.cut is not None and spec.cut.kind == "frozen":
        for name, param in inner.get_submodule(spec.cut.layer).named_parameters():
            if "lora_" in name:
                param.requires_grad_(False)
    # lora_B starts at zero; give it values so that paths carry non-zero gradients to lora_A too.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name and spec.seed % 2:
                param.normal_(0.0, 0.5)
    model.train()
    x = torch.randn(2, spec.dim)
    return model, x


@st.composite
def specs(draw: st.DrawFn, cut_kinds: tuple[str | None, ...] = CUT_KINDS + (None,)) -> Spec:
    dim = draw(st.integers(4, 8))
    n_regions = draw(st.integers(1, 3))
    block = st.builds(BlockSpec, two_branch=st.booleans(), act=st.sampled_from(sorted(ACTIVATIONS)))
    regions = tuple(tuple(draw(st.lists(block, min_size=1, max_size=3))) for _ in range(n_regions))
    linears = linear_names(regions)
    targets = tuple(draw(st.lists(st.sampled_from(linears), min_size=1, max_size=len(linears), unique=True)))
    kind = draw(st.sampled_from(cut_kinds))
    cut = None
    if kind == "frozen":
        cut = Cut(kind, layer=draw(st.sampled_from(targets)))
    elif kind is not None:
        region = draw(st.integers(0, n_regions - 1))
        cut = Cut(kind, region=region, block=draw(st.integers(0, len(regions[region]) - 1)))
        at_cut = f"{REGION_NAMES[region]}.blocks.{cut.block}.fc"
        if at_cut not in targets and draw(st.booleans()):
            targets += (at_cut,)  # often LoRA right at the cut, so that it starves something
    return Spec(
        dim=dim,
        topology=draw(st.sampled_from(["chain", "parallel"])),
        residual=draw(st.booleans()),
        regions=regions,
        targets=targets,
        head_trainable=draw(st.booleans()),
        cut=cut,
        seed=draw(st.integers(0, 2**16)),
    )
