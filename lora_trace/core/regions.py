"""Regions: the parts of a model a person names when talking about it (design §3). Torch-free."""

from __future__ import annotations

import functools

PEFT_CHAIN = ".base_model.model"


@functools.lru_cache(maxsize=1 << 16)  # a pure function of a name: every trace of a model asks for the same
def region_of(module: str) -> str:
    """The module path up to, not including, the first container of repeated blocks.

    `a.audio_tower.layers.3.self_attn.q_proj` -> `a.audio_tower`. A module outside any repeated block
    belongs to its parent (`x.multi_modal_projector.linear` -> `x.multi_modal_projector`); a child of the
    root, or a container of blocks at the root (`layers.0.mlp` -> `layers`), is its own region.
    """
    parts = module.split(".") if module else []
    for index, part in enumerate(parts):
        if part.isdigit() and index > 0:
            return ".".join(parts[: max(index - 1, 1)])
    if len(parts) <= 1:
        return module
    return ".".join(parts[:-1])


def short_name(name: str) -> str:
    """A display form without PEFT's wrapper chain: `enc.model.base_model.model.model.x` -> `enc.model.model.x`."""
    while PEFT_CHAIN + "." in name or name.endswith(PEFT_CHAIN):
        name = name.replace(PEFT_CHAIN, "", 1)
    if name.startswith("base_model.model."):
        name = name[len("base_model.model.") :]
    return name
