"""The HTML report: self-contained, escaped, and rendered by a real headless browser."""

import pathlib
import re

import pytest

import lora_trace
from lora_trace.present.html import render_html, write_html

from ..browser import chromium, open_page
from .test_dot import EVIL, evil_diagnosis

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"
ARTEFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
needs_browser = pytest.mark.skipif(chromium() is None, reason="Debian's chromium is installed by `make test`")


def test_the_page_is_self_contained_and_complete():
    page = render_html(lora_trace.load(GOLDEN / "demo-broken.run.json"))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no network fetch
    assert "<script" not in page
    for part in ("Findings", "Encoding path", "LoRA layers", "Gradient norms by layer", "Step-by-step report",
                 "grad-disabled", "<svg"):
        assert part in page
    assert page.count("<tr>") == 1 + 24  # header + one row per LoRA layer


def test_chinese_page():
    page = render_html(lora_trace.load(GOLDEN / "demo-broken.run.json"), lang="zh")
    assert '<html lang="zh">' in page and "根本原因" in page
    headings = [line for line in page.splitlines() if line.startswith("<h2>")]
    assert headings == ["<h2>诊断结果</h2>", "<h2>编码路径</h2>", "<h2>LoRA 层</h2>", "<h2>各层梯度范数</h2>",
                        "<h2>逐步报告</h2>"]
    outside_the_report = page.split("<pre>")[0]
    assert "Fix:" not in outside_the_report and "修复：" in outside_the_report and "错误；根本原因" in page
    assert ">从未运行<" in page or ">运行了，梯度被切断<" in page  # layer states in the table


def test_an_unknown_language_is_bad_input():
    with pytest.raises(lora_trace.LoraTraceError, match="speaks: en, zh"):
        render_html(lora_trace.load(GOLDEN / "demo-broken.run.json"), lang="fr")


def test_user_names_are_escaped():
    page = render_html(evil_diagnosis())
    assert EVIL not in page and "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


@needs_browser
@pytest.mark.parametrize("name", ["demo-broken", "demo-fixed"])
def test_the_page_renders_in_chromium_without_console_errors(tmp_path, name):
    ARTEFACTS.mkdir(exist_ok=True)
    page = pathlib.Path(write_html(lora_trace.load(GOLDEN / f"{name}.run.json"), str(tmp_path / "report.html")))
    screenshot = ARTEFACTS / f"report-{name}.png"
    dom, console = open_page(page, screenshot)
    assert console == []
    assert "Encoding path" in dom and "<svg" in dom and "lora-trace: ContrastiveQwen2AudioModel" in dom
    assert screenshot.stat().st_size > 20_000  # a real picture of the page, kept as a test artefact


@needs_browser
def test_the_escaped_page_runs_no_script_in_chromium(tmp_path):
    page = pathlib.Path(write_html(evil_diagnosis(), str(tmp_path / "evil.html")))
    dom, console = open_page(page)
    assert console == [] and "<script>alert" not in dom


@needs_browser
def test_the_console_check_can_fail(tmp_path):
    page = tmp_path / "noisy.html"
    page.write_text("<html><body><script>console.error('boom')</script>ok</body></html>")
    _, console = open_page(page)
    assert any("boom" in line for line in console)


def _notebook_page(tmp_path, fragment: str) -> pathlib.Path:
    """A page the way Jupyter shows a cell's output: the fragment inside other content it must leave alone."""
    page = tmp_path / "notebook.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><h1 id="nb">Notebook</h1>'
                    f'<div class="output">{fragment}</div><pre id="after">next cell</pre></body></html>')
    return page


def test_notebook_html_is_a_scoped_fragment_of_the_report():
    diagnosis = lora_trace.load(GOLDEN / "demo-broken.run.json")
    fragment = diagnosis._repr_html_()
    assert fragment.startswith('<div class="lora-trace"') and fragment.endswith("</div>")
    assert "<html" not in fragment and "<body" not in fragment and "<script" not in fragment
    style = fragment.split("<style>")[1].split("</style>")[0]
    assert all(rule.startswith(".lora-trace") for rule in style.split("}") if rule), style
    assert "grad-disabled" in fragment and "<svg" in fragment and "Step-by-step report" in fragment
    comparison = lora_trace.compare(GOLDEN / "demo-broken.run.json", GOLDEN / "demo-fixed.run.json")
    assert "LoRA path differs" in comparison._repr_html_() and "<script" not in comparison._repr_html_()
    assert EVIL not in evil_diagnosis()._repr_html_()


@needs_browser
def test_notebook_html_renders_in_chromium_and_runs_no_script(tmp_path):
    evil = _notebook_page(tmp_path, evil_diagnosis()._repr_html_())
    dom, console = open_page(evil)
    assert console == [] and "<script>alert" not in dom and 'id="after"' in dom
    diagnosis = lora_trace.load(GOLDEN / "demo-broken.run.json")
    dom, console = open_page(_notebook_page(tmp_path, diagnosis._repr_html_()))
    assert console == [] and "grad-disabled" in dom and "<svg" in dom and 'id="nb">Notebook<' in dom
