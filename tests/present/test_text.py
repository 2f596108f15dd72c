"""The text report, pinned by golden files in both languages (regenerate with --update-golden)."""

import dataclasses
import pathlib

import pytest

import lora_trace
from lora_trace.scenarios import contrastive_qwen2_audio
from lora_trace.scenarios.causal_lm import causal_lm

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"
RUNS = {
    "demo-broken": lambda: contrastive_qwen2_audio(fault="no-grad"),
    "demo-fixed": lambda: contrastive_qwen2_audio(strategy="full_forward"),
    "frozen-adapter": lambda: causal_lm(fault="loaded-frozen"),
    "glob-target": lambda: causal_lm(fault="glob-target"),
}


def _run(name, update):
    """A saved run: re-created with --update-golden, else loaded, so the report test pins the renderer."""
    path = GOLDEN / f"{name}.run.json"
    if update:
        scenario = RUNS[name]()
        diagnosis = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer, label=name)
        findings = tuple(dataclasses.replace(f, stack=tuple(s for s in f.stack if "tests/" not in s))
                         for f in diagnosis.findings)  # test-runner frames would change with every edit here
        diagnosis = lora_trace.Diagnosis(findings, diagnosis.trace)
        diagnosis.save(path)
    return lora_trace.load(path)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("name", sorted(RUNS))
def test_report_matches_golden(name, lang, update_golden):
    text = _run(name, update_golden).report(lang=lang)
    golden = GOLDEN / f"{name}.{lang}.txt"
    if update_golden:
        golden.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == golden.read_text(encoding="utf-8")


def test_the_saved_runs_still_match_what_the_tool_finds_today():
    """Guards the golden runs themselves: a fresh diagnosis gives the same codes and locations."""
    for name, build in RUNS.items():
        scenario = build()
        fresh = lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer)
        saved = lora_trace.load(GOLDEN / f"{name}.run.json")
        assert [(f.code, f.location) for f in fresh.findings] == [(f.code, f.location) for f in saved.findings]


def test_colour_only_when_asked():
    run = lora_trace.load(GOLDEN / "demo-broken.run.json")
    assert "\x1b[31m[FAIL]\x1b[0m" in run.report(color=True)
    assert "\x1b[" not in run.report()


def test_unknown_language_is_refused_plainly():
    run = lora_trace.load(GOLDEN / "demo-broken.run.json")
    with pytest.raises(ValueError, match="the report speaks: en, zh"):
        run.report(lang="fr")


def test_chinese_report_translates_every_finding():
    run = lora_trace.load(GOLDEN / "demo-broken.run.json")
    assert all("zh" in f.translations for f in run.findings)
    text = run.report(lang="zh")
    assert "根本原因: grad-disabled" in text and "修复：" in text and "Root cause" not in text


def test_parameters_a_raising_backward_had_not_reached_are_not_counted_as_getting_none():
    import torch
    from peft import LoraConfig, get_peft_model

    from ..capture.conftest import TwoLayers

    torch.manual_seed(0)
    model = get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder", "decoder"],
                                                   init_lora_weights=False))
    inner = model.base_model.model

    def stop(grad):
        raise RuntimeError("a hook of the user's, between the layers")

    with pytest.raises(RuntimeError), lora_trace.trace(model) as tracer:
        h = torch.relu(inner.encoder(torch.randn(4, 8)))
        h.register_hook(stop)
        inner.head(torch.relu(inner.decoder(h))).pow(2).mean().backward()
    report = tracer.diagnosis.report()
    assert "2 of 4 trainable LoRA parameters got a gradient (0 exactly zero), 0 got none" in report
    assert "backward raised part way: 2 trainable LoRA parameters had not got a gradient when it stopped" in report
