"""target_modules coverage with PEFT's own matching."""

import pytest
import torch
from peft import LoraConfig

from lora_trace.capture.matching import candidate_modules, entry_table, exact_target_regex, glob_to_regex, matches
from lora_trace.fixes import enable_lora_gradients, suggest_target_modules
from lora_trace.scenarios import contrastive_qwen2_audio
from lora_trace.scenarios.causal_lm import causal_lm


@pytest.fixture(scope="module")
def audio_model():
    return contrastive_qwen2_audio().model.speech_encoder.model.get_base_model()


def test_list_entries_are_exact_names_or_suffixes_and_reach_the_audio_tower(audio_model):
    modules = candidate_modules(audio_model)
    rows = {r.entry: r for r in entry_table(LoraConfig(target_modules=["q_proj", "o_proj"]), modules)}
    assert len(rows["q_proj"].matched) == 4  # 2 audio-tower + 2 language-model layers
    assert any("audio_tower" in m for m in rows["q_proj"].matched)
    assert all("language_model" in m for m in rows["o_proj"].matched)


def test_a_glob_matches_nothing_and_its_regex_form_is_checked(audio_model):
    modules = candidate_modules(audio_model)
    config = LoraConfig(target_modules=["q_proj", "audio_tower.*.self_attn.q_proj"])
    row = next(r for r in entry_table(config, modules) if "*" in r.entry)
    assert row.matched == () and "no wildcard" in row.note
    config.target_modules = row.proposal  # the glob's meaning plus the valid "q_proj" entry, as one regex
    assert sorted(matches(config, modules)) == sorted(
        [f"model.audio_tower.layers.{i}.self_attn.q_proj" for i in (0, 1)]
        + [f"model.language_model.layers.{i}.self_attn.q_proj" for i in (0, 1)])


def test_exclude_modules_and_layers_to_transform_follow_peft(audio_model):
    modules = candidate_modules(audio_model)
    excluded = LoraConfig(target_modules=["q_proj"], exclude_modules=r".*audio_tower.*")
    assert all("language_model" in n for n in matches(excluded, modules))
    layered = LoraConfig(target_modules=["q_proj"], layers_to_transform=[1], layers_pattern="layers")
    assert sorted(matches(layered, modules)) == ["model.audio_tower.layers.1.self_attn.q_proj",
                                                 "model.language_model.layers.1.self_attn.q_proj"]


def test_glob_to_regex():
    assert glob_to_regex("a.*.q") == r"(.*\.)?a\..*\.q"


def test_the_exact_regex_selects_exactly_what_ran_and_falls_back_when_layers_are_missing(audio_model):
    modules = candidate_modules(audio_model)
    ran = [n for n in modules if "audio_tower.layers" in n and modules[n] == "Linear"]
    regex = exact_target_regex(ran, modules, LoraConfig(target_modules="x"))
    assert r"\d+" in regex
    config = LoraConfig(target_modules=regex)
    assert sorted(matches(config, modules)) == sorted(ran)
    partial = [n for n in ran if ".layers.0." in n]
    regex = exact_target_regex(partial, modules, LoraConfig(target_modules="x"))
    assert sorted(matches(LoraConfig(target_modules=regex), modules)) == sorted(partial)


def test_suggest_target_modules_never_proposes_the_output_head():
    base = causal_lm().model.get_base_model()
    regex = suggest_target_modules(base, ["lm_head", "model.layers.0.mlp.up_proj"])
    assert sorted(matches(LoraConfig(target_modules=regex), candidate_modules(base))) == ["model.layers.0.mlp.up_proj"]


def test_enable_lora_gradients_unfreezes_only_active_lora():
    scenario = causal_lm(fault="loaded-frozen")
    changed = enable_lora_gradients(scenario.model)
    assert len(changed) == 8 and all(".lora_" in n for n in changed)
    trainable = {n for n, p in scenario.model.named_parameters() if p.requires_grad}
    assert trainable == set(changed)
    assert enable_lora_gradients(scenario.model) == []  # idempotent


def test_candidate_modules_see_through_lora_wrappers():
    model = causal_lm().model
    modules = candidate_modules(model.get_base_model())
    assert modules["model.layers.0.self_attn.q_proj"] == "Linear"
    assert not any(".lora_A" in n or "base_layer" in n for n in modules)
    assert isinstance(model.get_base_model().model.layers[0].self_attn.q_proj.base_layer, torch.nn.Linear)


def _tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=32, vocab_size=32)
    return Qwen2ForCausalLM(config)


def test_a_typo_gets_a_checked_suggestion_naming_the_right_modules():
    modules = candidate_modules(_tiny_qwen2())
    rows = {r.entry: r for r in entry_table(LoraConfig(target_modules=["q_prj", "self_atn.v_proj", "k_proj"]),
                                            modules)}
    assert rows["q_prj"].matched == () and rows["q_prj"].corrected == ("q_proj",)
    assert rows["q_prj"].meant == tuple(f"model.layers.{i}.self_attn.q_proj" for i in (0, 1))
    assert rows["self_atn.v_proj"].corrected == ("self_attn.v_proj",)
    assert rows["k_proj"].corrected == () and len(rows["k_proj"].matched) == 2


def test_a_suggestion_peft_rejects_is_never_proposed():
    from lora_trace.capture.matching import near_misses

    modules = candidate_modules(_tiny_qwen2())
    assert [fix for fix, _ in near_misses("q_prj", modules)] == ["q_proj"]
    excluded = LoraConfig(target_modules=["q_prj", "k_proj"], exclude_modules=r".*q_proj")  # PEFT drops q_proj
    row = next(r for r in entry_table(excluded, modules) if r.entry == "q_prj")
    assert row.corrected == () and row.meant == ()
    assert not near_misses("v_prj.x", {}) and not near_misses("qkv_proj", modules)  # nothing close: no guess


def test_unmatched_target_parameters_are_reported_with_a_checked_fix():
    from lora_trace.capture.matching import candidate_parameters
    from lora_trace.scenarios.timeline import timeline_case

    model = timeline_case("target-parameters-unmatched").model
    tuner = model.base_model
    params = candidate_parameters(list(tuner.model.named_modules()))
    assert not any("lora_" in name for name in params)
    rows = {r.entry: r for r in entry_table(tuner.peft_config["default"], {}, parameters=params)}
    assert rows["mlp.experts.gate_up_proj"].kind == "parameter" and len(rows["mlp.experts.gate_up_proj"].matched) == 2
    wrong = rows["mlp.experts.down_proj.weight"]
    assert wrong.matched == () and wrong.corrected == ("mlp.experts.down_proj",)
    assert wrong.meant == tuple(f"model.layers.{i}.mlp.experts.down_proj" for i in (0, 1))
