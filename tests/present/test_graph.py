"""The encoding-path graph: nodes, states, flow edges and cut edges, from real runs."""

import pathlib

import pytest

import lora_trace
from lora_trace.present.graph import build_graph
from lora_trace.scenarios import contrastive_qwen2_audio

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"


def _lora_states(graph):
    return {graph.nodes[n]["region"].rsplit(".", 1)[-1]: graph.nodes[n]["state"]
            for n, d in graph.nodes(data=True) if d["kind"] == "lora"}


def test_broken_demo_shows_where_the_path_goes_and_where_it_breaks():
    graph = build_graph(lora_trace.load(GOLDEN / "demo-broken.run.json"))
    assert _lora_states(graph) == {"audio_tower": "severed", "language_model": "never", "model": "grad"}
    regions = {d["label"].rsplit(".", 1)[-1]: d for n, d in graph.nodes(data=True) if d["kind"] == "region"}
    assert regions["audio_tower"]["ran"] and not regions["audio_tower"]["grad"]
    assert not regions["language_model"]["ran"]
    cut = [(s, t, d["cut"]) for s, t, d in graph.edges(data=True) if d["cut"]]
    assert len(cut) == 1
    source, target, label = cut[0]
    assert source.endswith("audio_tower") and target == "region:proj_speech"
    assert label == "grad-disabled @ lora_trace/scenarios/contrastive_model.py:37"
    assert graph.edges[source, target]["inferred"]  # no autograd link survives a no_grad block
    assert graph.has_edge("region:proj_speech", "loss") and graph.has_edge("region:proj_text", "loss")


def test_fixed_demo_flows_audio_tower_projector_language_model_head_loss():
    graph = build_graph(lora_trace.load(GOLDEN / "demo-fixed.run.json"))
    assert set(_lora_states(graph).values()) == {"grad"}
    chain = ["audio_tower", "multi_modal_projector", "language_model"]
    nodes = {d["label"].rsplit(".", 1)[-1]: n for n, d in graph.nodes(data=True) if d["kind"] == "region"}
    for a, b in zip(chain, chain[1:], strict=False):
        assert graph.has_edge(nodes[a], nodes[b]) and not graph.edges[nodes[a], nodes[b]]["inferred"]
    assert graph.has_edge(nodes["language_model"], "region:proj_speech")
    assert not any(d["cut"] for *_, d in graph.edges(data=True))


def test_detach_cut_is_on_the_edge_into_the_projection_head():
    scenario = contrastive_qwen2_audio(targets="audio-only", fault="detach")
    graph = build_graph(lora_trace.diagnose(scenario.model, scenario.step))
    cuts = {t: d["cut"] for s, t, d in graph.edges(data=True) if d["cut"]}
    assert list(cuts) == ["region:proj_speech"]
    assert cuts["region:proj_speech"].startswith("detached @ lora_trace/scenarios/contrastive_model.py:")


@pytest.mark.parametrize("expand", [False, True])
def test_real_size_blocks_collapse_unless_expanded(expand):
    scenario = contrastive_qwen2_audio(size="qwen2-audio-7b", fault="no-grad")
    graph = build_graph(lora_trace.diagnose(scenario.model, scenario.step), expand=expand)
    lora = [d for _, d in graph.nodes(data=True) if d["kind"] == "lora"]
    assert sum(d["count"] for d in lora) == 320 + 4
    if expand:
        assert len(lora) == 324
    else:
        labels = {d["region"].rsplit(".", 1)[-1]: d["label"] for d in lora}
        assert labels["audio_tower"] == labels["language_model"] == "layers.0-31 x32"
        assert len(lora) == 3


def test_a_region_around_a_nested_region_is_drawn_as_ran_and_listed_as_traversed():
    """CLAP's audio encoder holds LoRA blocks and a nested fusion model with LoRA of its own: both ran
    (issue 15, item 6). Before, the outer one was grey "never ran" and a LoRA wrapper was called a region."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    import lora_trace
    from lora_trace.analysis.facts import Facts
    from lora_trace.present.graph import build_graph

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(8, 8)

        def forward(self, x):
            return torch.relu(self.q(x))

    class AudioEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])
            self.fusion_model = Block()

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.fusion_model(x)

    class Clap(nn.Module):
        def __init__(self):
            super().__init__()
            self.audio_encoder = AudioEncoder()
            self.proj = nn.Linear(8, 4)

        def forward(self, x):
            return self.proj(self.audio_encoder(x))

    torch.manual_seed(0)
    model = get_peft_model(Clap(), LoraConfig(r=2, target_modules=["q"]))
    with lora_trace.trace(model) as t:
        model(torch.randn(3, 8)).pow(2).mean().backward()
    diagnosis = t.diagnosis
    outer, inner = "base_model.model.audio_encoder", "base_model.model.audio_encoder.fusion_model"
    assert {s.region for s in diagnosis.trace.sites} == {outer, inner}
    assert set(Facts(diagnosis.trace).traversed_regions) == {outer, inner}
    assert "regions traversed: audio_encoder, audio_encoder.fusion_model" in diagnosis.report()
    graph = build_graph(diagnosis)
    assert graph.nodes[f"region:{outer}"]["ran"] and graph.nodes[f"region:{inner}"]["ran"]
    assert not any(n.startswith("region:") and n.endswith(".q") for n in graph)
