"""The command line, through main(argv) -> int."""

import json

import pytest

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
    assert (tmp_path / "graph.svg").read_text().lstrip().startswith("<?xml")
    assert "grad-disabled" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "run.json").read_text())["kind"] == "lora-trace.run"


def test_demo_fixed_has_no_error(capsys):
    assert main(["demo", "--fixed"]) == 0
    out = capsys.readouterr().out
    assert "No error: every trainable LoRA parameter is on the gradient path." in out
    assert "without a gradient: 0 of 40" in out


GOLDEN = __import__("pathlib").Path(__file__).parent / "golden"


def test_show_exits_1_on_errors_and_0_without(capsys):
    assert main(["show", str(GOLDEN / "demo-broken.run.json")]) == 1
    assert "Root cause: grad-disabled" in capsys.readouterr().out
    assert main(["show", str(GOLDEN / "demo-fixed.run.json"), "--lang", "zh"]) == 0
    assert "没有错误" in capsys.readouterr().out


def test_show_json_lists_the_findings(capsys):
    assert main(["show", str(GOLDEN / "demo-broken.run.json"), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in findings][:2] == ["grad-disabled", "lora-bypassed"]


def test_show_bad_input_exits_2_with_a_plain_message(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["show", str(bad)]) == 2
    assert "not a lora-trace run" in capsys.readouterr().err
    assert main(["show"]) == 2  # argparse: missing argument


def test_targets_reports_the_real_seed_list_coverage(capsys):
    config = str(__import__("pathlib").Path(__file__).parents[1] / "examples" / "configs" / "qwen2-audio-7b.json")
    seed = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert main(["targets", config, "--target-modules", *seed, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["modules"], result["params"]) == (320, 640)
    assert {r.rsplit(".", 1)[-1]: v["params"] for r, v in result["regions"].items()} == {
        "audio_tower": 192, "language_model": 448}
    assert main(["targets", config, "--target-regex", r".*audio_tower.*\.(q_proj|fc1)"]) == 0
    assert "Selected: 64 modules, 128 LoRA parameters" in capsys.readouterr().out


def test_targets_explains_a_glob(tmp_path, capsys):
    from lora_trace.scenarios.qwen2_audio import qwen2_audio_config

    path = tmp_path / "config.json"
    qwen2_audio_config("tiny").to_json_file(path)
    assert main(["targets", str(path), "--target-modules", "q_proj", "audio_tower.*.self_attn.q_proj"]) == 0
    out = capsys.readouterr().out
    assert "no wildcard" in out and r"audio_tower\..*\.self_attn\.q_proj" in out
    assert main(["targets", str(tmp_path / "missing.json"), "--target-modules", "q_proj"]) == 2


def test_render_and_report_verbs(tmp_path, capsys):
    run = str(GOLDEN / "demo-broken.run.json")
    assert main(["render", run, "-o", str(tmp_path / "g.dot"), "--expand"]) == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert main(["report", run, "-o", str(tmp_path / "r.html"), "--lang", "zh"]) == 0
    assert "根本原因" in (tmp_path / "r.html").read_text(encoding="utf-8")
    capsys.readouterr()


def test_render_to_an_unknown_suffix_exits_2(tmp_path, capsys):
    assert main(["render", str(GOLDEN / "demo-broken.run.json"), "-o", str(tmp_path / "g.gif")]) == 2
    assert ".svg, .png, .pdf, .dot" in capsys.readouterr().err


def test_a_bug_is_not_passed_off_as_bad_input(monkeypatch):
    """Only lora-trace's own errors (and unreadable files) are "bad input", exit 2; a bug keeps its traceback."""
    import lora_trace.core.serialize

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(lora_trace.core.serialize, "load", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["show", str(GOLDEN / "demo-broken.run.json")])


def test_a_bad_regex_is_bad_input(capsys):
    config = str(__import__("pathlib").Path(__file__).parents[1] / "examples" / "configs" / "qwen2-audio-7b.json")
    assert main(["targets", config, "--target-regex", "(q_proj"]) == 2
    assert "not a valid regex" in capsys.readouterr().err


def test_targets_checks_target_parameters_and_suggests_checked_fixes(capsys):
    config = str(__import__("pathlib").Path(__file__).parents[1] / "examples" / "configs" / "qwen2-audio-7b.json")
    assert main(["targets", config, "--target-modules", "q_prj", "k_proj",
                 "--target-parameters", "mlp.gate_prj.weight", "--json"]) == 0
    entries = {e["entry"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert entries["q_prj"]["modules"] == 0 and entries["q_prj"]["corrected"] == ["q_proj"]
    assert entries["mlp.gate_prj.weight"]["kind"] == "parameter"
    assert entries["mlp.gate_prj.weight"]["corrected"] == ["mlp.gate_proj.weight"]
    assert main(["targets", config]) == 2


def test_version_and_a_help_written_for_users(capsys):
    import lora_trace

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lora-trace {lora_trace.__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "argparse" not in out and "main(argv)" not in out
    assert "Find out why a LoRA adapter does not learn" in out and "exit codes:" in out
    assert all(verb in out for verb in ("demo", "show", "inspect", "targets", "diff", "render", "report"))


def test_targets_takes_a_model_folder_and_a_model_id_from_the_local_cache_only(tmp_path):
    """No network: a model id is looked up in the Hugging Face cache (here one laid out by hand, as the hub
    client writes it); one that is not there is a clear bad-input error."""
    import subprocess
    import sys

    from lora_trace.scenarios.qwen2_audio import qwen2_audio_config

    folder = tmp_path / "my-model"
    folder.mkdir()
    qwen2_audio_config("tiny").to_json_file(folder / "config.json")
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-audio" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((folder / "config.json").read_text())
    (cache / "models--acme--tiny-audio" / "refs").mkdir()
    (cache / "models--acme--tiny-audio" / "refs" / "main").write_text("0" * 40)
    env = {**__import__("os").environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

    def targets(spec):
        return subprocess.run([sys.executable, "-m", "lora_trace", "targets", spec, "--target-modules", "q_proj",
                               "--json"], capture_output=True, text=True, env=env, timeout=120)

    by_folder, by_id = targets(str(folder)), targets("acme/tiny-audio")
    assert by_folder.returncode == 0 and by_id.returncode == 0, by_folder.stderr + by_id.stderr
    assert json.loads(by_folder.stdout)["modules"] == json.loads(by_id.stdout)["modules"] > 0
    missing = targets("acme/not-downloaded")
    assert missing.returncode == 2 and "not" in missing.stderr and "local Hugging Face cache" in missing.stderr
    assert "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in targets(str(empty)).stderr


def test_inspect_is_a_verb_of_the_command_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "no-such-adapter")]) == 2
    assert capsys.readouterr().err.startswith("lora-trace: ")


def test_targets_expands_all_linear_as_peft_does(tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64, architectures=["Qwen2ForCausalLM"])
    config.save_pretrained(tmp_path)
    truth = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(target_modules="all-linear"))
    adapted = sum(1 for _, m in truth.named_modules() if hasattr(m, "lora_A"))
    assert main(["targets", str(tmp_path), "--target-modules", "all-linear", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modules"] == adapted == 14
