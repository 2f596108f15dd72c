"""Comparing runs: gained and lost layers, fixed and introduced findings, configuration changes."""

import json
import math
import pathlib

import lora_trace
from lora_trace.cli import main
from lora_trace.present.comparison import comparison_graph
from lora_trace.scenarios import contrastive_qwen2_audio
from lora_trace.scenarios.causal_lm import causal_lm

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"
BROKEN, FIXED = GOLDEN / "demo-broken.run.json", GOLDEN / "demo-fixed.run.json"


def test_broken_to_fixed_gains_the_audio_tower_and_language_model_layers():
    result = lora_trace.compare(BROKEN, FIXED)
    assert not result.same_path and result.lost == ()
    regions = {m.split(".layers.")[0].rsplit(".", 1)[-1] for m in result.gained}
    assert regions == {"audio_tower", "language_model"} and len(result.gained) == 20
    assert {r.rsplit(".", 1)[-1]: v for r, v in result.regions.items()} == {
        "audio_tower": (0, 6), "language_model": (0, 14), "model": (4, 4)}
    assert [f.split(" @ ")[0] for f in result.fixed] == ["grad-disabled", "lora-bypassed"]
    assert result.introduced == ()
    assert len(result.norm_ratios) == 4 and all(math.isfinite(v) and v > 0 for v in result.norm_ratios.values())


def test_the_reverse_loses_them_and_a_run_equals_itself():
    assert len(lora_trace.compare(FIXED, BROKEN).lost) == 20
    same = lora_trace.compare(BROKEN, BROKEN)
    assert same.same_path and same.fixed == same.introduced == () and same.config_changes == {}


def test_configuration_differences_are_listed():
    a = lora_trace.diagnose(*(lambda s: (s.model, s.step))(contrastive_qwen2_audio(targets="seed-list")))
    b = lora_trace.diagnose(*(lambda s: (s.model, s.step))(contrastive_qwen2_audio(targets="audio-only")))
    changes = lora_trace.compare(a, b).config_changes
    key = "speech_encoder.model[default].target_modules"
    assert key in changes and changes[key][0] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"])


def test_a_finding_introduced_by_a_change_is_named():
    fine = causal_lm()
    broken = causal_lm(fault="lr-zero")
    a = lora_trace.diagnose(fine.model, fine.step, optimizer=fine.optimizer)
    b = lora_trace.diagnose(broken.model, broken.step, optimizer=broken.optimizer)
    result = lora_trace.compare(a, b)
    assert result.same_path and [i.split(" @ ")[0] for i in result.introduced] == ["not-updated"]


def test_json_like_runs():
    data = lora_trace.compare(BROKEN, FIXED).to_dict()
    assert data["kind"] == "lora-trace.comparison" and data["same_path"] is False
    json.dumps(data, allow_nan=False)


def test_the_comparison_graph_marks_gained_layers():
    graph = comparison_graph(BROKEN, FIXED)
    changes = sorted(d["change"] for _, d in graph.nodes(data=True) if d.get("change"))
    assert changes == ["+14 gained", "+6 gained"]


def test_diff_command_exit_codes(tmp_path, capsys):
    assert main(["diff", str(BROKEN), str(FIXED), "--graph", str(tmp_path / "diff.dot")]) == 1
    out = capsys.readouterr().out
    assert "20 layers gained" in out and "audio_tower" in out
    assert "+6 gained" in (tmp_path / "diff.dot").read_text()
    assert main(["diff", str(FIXED), str(FIXED)]) == 0
    assert main(["diff", str(FIXED), str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "foreign.json"
    bad.write_text('{"hello": 1}')
    assert main(["diff", str(FIXED), str(bad)]) == 2
    assert "not a lora-trace run" in capsys.readouterr().err
