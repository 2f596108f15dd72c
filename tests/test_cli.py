"""The command line, through main(argv) -> int."""

import json

import lora_trace
from lora_trace.cli import main


def test_demo_reports_the_guides_case_and_writes_the_run(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Root cause: grad-disabled" in out
    assert "with torch.no_grad()" in out and "lora-bypassed" in out
    assert "640 speech-encoder LoRA parameters" in out
    assert "grad-disabled: 192 parameters in audio_tower" in out
    assert "lora-bypassed: 448 parameters in language_model" in out
    assert "tracer agrees on every parameter" in out
    assert "\x1b[" not in out  # not a terminal: no colour
    run = lora_trace.load(tmp_path / "run.json")
    assert run.findings[0].code == "grad-disabled" and run.label == "broken"
    assert json.loads((tmp_path / "run.json").read_text())["kind"] == "lora-trace.run"


def test_demo_fixed_has_no_error(capsys):
    assert main(["demo", "--fixed"]) == 0
    out = capsys.readouterr().out
    assert "No error: every trainable LoRA parameter is on the gradient path." in out
    assert "without a gradient: 0 of 40" in out
