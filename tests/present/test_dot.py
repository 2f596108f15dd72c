"""Rendering: golden DOT, every format, escaping of user names, and life without graphviz."""

import pathlib
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace
from lora_trace.core.errors import GraphvizMissingError
from lora_trace.present.dot import to_dot
from lora_trace.present.graph import build_graph

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"
EVIL = '<script>alert("x")</script>\\'


@pytest.mark.parametrize("name", ["demo-broken", "demo-fixed"])
@pytest.mark.parametrize("expand", [False, True])
def test_dot_matches_golden(name, expand, update_golden):
    dot = to_dot(build_graph(lora_trace.load(GOLDEN / f"{name}.run.json"), expand=expand))
    golden = GOLDEN / f"{name}{'.expanded' if expand else ''}.dot"
    if update_golden:
        golden.write_text(dot, encoding="utf-8")
    assert dot == golden.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is installed by `make test`")
@pytest.mark.parametrize("suffix", ["svg", "png", "pdf", "dot"])
def test_every_format_renders(tmp_path, suffix):
    path = tmp_path / f"graph.{suffix}"
    lora_trace.load(GOLDEN / "demo-broken.run.json").render(str(path))
    head = path.read_bytes()[:8]
    assert {"svg": b"<svg" in path.read_bytes()[:400], "png": head.startswith(b"\x89PNG"),
            "pdf": head.startswith(b"%PDF"), "dot": head.startswith(b"digraph")}[suffix]


def test_an_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.pdf, \.dot"):
        lora_trace.load(GOLDEN / "demo-broken.run.json").render(str(tmp_path / "graph.jpg"))


def test_without_dot_the_dot_file_is_written_and_the_error_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(GraphvizMissingError, match="apt-get install graphviz"):
        lora_trace.load(GOLDEN / "demo-broken.run.json").render(str(tmp_path / "graph.svg"))
    assert (tmp_path / "graph.dot").read_text().startswith("digraph")


def evil_diagnosis():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleDict({EVIL: nn.Linear(4, 4)})
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            with torch.no_grad():
                hidden = self.blocks[EVIL](x)
            return self.head(hidden).sum()

    model = get_peft_model(Model(), LoraConfig(r=2, target_modules=[EVIL]))
    return lora_trace.diagnose(model, lambda m: m(torch.randn(2, 4)), label='run "<b>"')


def test_names_are_escaped_in_dot():
    dot = to_dot(build_graph(evil_diagnosis()))
    assert '<script>alert(\\"x\\")</script>\\\\' in dot  # quotes and backslashes escaped inside "..."
    assert 'run \\"<b>\\"' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is installed by `make test`")
def test_names_render_literally_in_svg(tmp_path):
    evil_diagnosis().render(str(tmp_path / "evil.svg"))
    svg = (tmp_path / "evil.svg").read_text()
    assert "<script>" not in svg and "&lt;script&gt;" in svg
