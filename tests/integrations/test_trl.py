"""The Trainer callback inside TRL's SFTTrainer, DPOTrainer and GRPOTrainer on a tiny Qwen2 (CPU, no download):
each trainer healthy, then with a fault TRL users really hit, judged on the first step."""

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402

from lora_trace.integrations import LoraTraceCallback  # noqa: E402
from lora_trace.scenarios import trl_stack  # noqa: E402

# TRL's configs set `gradient_checkpointing`, whose transformers names are deprecated: not this test's concern.
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing.*` is deprecated:FutureWarning")
_COMMON = dict(max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True, save_strategy="no",
               logging_strategy="no", disable_tqdm=True, seed=0)


def _lora(targets=("q_proj", "v_proj")):
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=list(targets))


def _saved_adapter(tokenizer, folder):
    """An adapter as an SFT run leaves it (lora_B no longer zero), saved to `folder` for a later DPO/GRPO run."""
    from peft import get_peft_model

    model = get_peft_model(trl_stack.tiny_qwen2(tokenizer), _lora())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(1))
    model.save_pretrained(folder)
    return folder


def _loaded(tokenizer, folder, *, is_trainable):
    from peft import PeftModel

    return PeftModel.from_pretrained(trl_stack.tiny_qwen2(tokenizer), str(folder), is_trainable=is_trainable)


def _lora_trace_hooks(model):
    """The hooks lora-trace installed on the model (by the module of the hook function). The Trainer's own hooks
    (gradient checkpointing's input-grad hook on the embeddings) come and go with train() and are not counted."""
    tables = [getattr(module, attr, {}) for module in model.modules()
              for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")]
    tables += [table or {} for param in model.parameters()
               for table in (param._backward_hooks, param._post_accumulate_grad_hooks)]
    return [fn for table in tables for fn in table.values()
            if str(getattr(fn, "__module__", None) or getattr(getattr(fn, "func", None), "__module__", "")
                   ).startswith("lora_trace.")]


def _hook_probe():
    """A callback placed after LoraTraceCallback: counts lora-trace's hooks while the traced step is open."""
    from transformers import TrainerCallback

    class HookProbe(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            self.seen.append(len(_lora_trace_hooks(model)))

    return HookProbe()


def _train(trainer_class, config_class, tmp_path, *, model=None, peft_config=None, dataset, expect_crash=False,
           **options):
    """Train one step with the callback; returns its only diagnosis (and checks that no hook was left behind)."""
    tokenizer = trl_stack.tiny_tokenizer()
    model = model if model is not None else trl_stack.tiny_qwen2(tokenizer)
    callback, probe = LoraTraceCallback(render=False), _hook_probe()
    trainer_options = {key: options.pop(key) for key in ("reward_funcs",) if key in options}
    args = config_class(output_dir=str(tmp_path / "run"), **_COMMON, **options)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config, callbacks=[callback, probe], **trainer_options)
    if expect_crash:
        with pytest.raises(RuntimeError):
            trainer.train()
        callback.close()
        assert callback.crashed is not None
    else:
        trainer.train()
    assert probe.seen[0] > 0 and _lora_trace_hooks(trainer.model) == []  # hooks while traced, none after
    (step, diagnosis), = callback.diagnoses
    assert step == 0
    return diagnosis


def _assert_healthy(diagnosis):
    assert [f.severity for f in diagnosis.findings if f.severity in ("error", "warning")] == [], diagnosis.report()
    assert diagnosis.complete and diagnosis.trace.backward and diagnosis.trace.optimizer_steps == 1


def _no_grad_calls(diagnosis, *, disabled):
    """LoRA-layer calls made with grad off, with the adapters disabled (TRL's reference pass inside the step) or
    enabled (GRPO's generation inside the step)."""
    return [c for c in diagnosis.trace.calls if c.state is not None and c.state.disabled == disabled
            and not c.grad_enabled]


# SFT


def _sft(tmp_path, **kwargs):
    from trl import SFTConfig, SFTTrainer

    return _train(SFTTrainer, SFTConfig, tmp_path, dataset=trl_stack.sft_dataset(), max_length=32, **kwargs)


def test_sft_with_a_peft_config_is_healthy(tmp_path):
    diagnosis = _sft(tmp_path, peft_config=_lora())
    _assert_healthy(diagnosis)
    assert diagnosis.codes() == ("zero-grad-at-init",)


def test_sft_with_a_typo_in_target_modules_warns_and_names_the_module_meant(tmp_path):
    diagnosis = _sft(tmp_path, peft_config=_lora(["q_proj", "v_prj"]))
    assert diagnosis.codes("error") == () and diagnosis.codes("warning") == ("target-unmatched",), diagnosis.report()
    finding, = [f for f in diagnosis.findings if f.code == "target-unmatched"]
    assert "'v_prj'" in finding.message and "Replace 'v_prj' by 'v_proj'" in finding.fix


def test_sft_continuing_a_saved_adapter_loaded_without_is_trainable_is_frozen(tmp_path):
    """`PeftModel.from_pretrained(base, path)` loads the adapter for inference (frozen); SFTTrainer trains on."""
    tokenizer = trl_stack.tiny_tokenizer()
    model = _loaded(tokenizer, _saved_adapter(tokenizer, tmp_path / "sft-adapter"), is_trainable=False)
    diagnosis = _sft(tmp_path, model=model)
    assert diagnosis.codes("error") == ("lora-frozen",), diagnosis.report()
    assert "is_trainable=True" in diagnosis.root_cause.fix


# DPO


def _dpo(tmp_path, **kwargs):
    from trl import DPOConfig, DPOTrainer

    return _train(DPOTrainer, DPOConfig, tmp_path, dataset=trl_stack.preference_dataset(), max_length=32, **kwargs)


def test_dpo_with_a_peft_config_is_healthy_although_the_reference_pass_disables_the_adapter(tmp_path):
    """With no ref_model, DPOTrainer scores the reference with `model.disable_adapter()` under no_grad inside
    the step: the same LoRA layers run a second time, adapter off, and that is not a fault."""
    diagnosis = _dpo(tmp_path, peft_config=_lora())
    _assert_healthy(diagnosis)
    assert _no_grad_calls(diagnosis, disabled=True), "the reference pass (adapter disabled) was not seen in the step"


def test_dpo_on_an_sft_adapter_loaded_without_is_trainable_is_frozen(tmp_path):
    """The usual SFT-then-DPO flow with the adapter loaded for inference: the loss has no gradient and the step
    raises in TRL (a RuntimeError, or a CheckpointError under gradient checkpointing); the crashed step is
    still diagnosed, and the cause named."""
    tokenizer = trl_stack.tiny_tokenizer()
    model = _loaded(tokenizer, _saved_adapter(tokenizer, tmp_path / "sft-adapter"), is_trainable=False)
    diagnosis = _dpo(tmp_path, model=model, expect_crash=True)
    assert not diagnosis.complete
    assert diagnosis.codes("error") == ("lora-frozen",), diagnosis.report()


# GRPO


def _grpo(tmp_path, **kwargs):
    from trl import GRPOConfig, GRPOTrainer

    kwargs.setdefault("reward_funcs", trl_stack.score_reward)
    return _train(GRPOTrainer, GRPOConfig, tmp_path, dataset=trl_stack.prompt_dataset(), max_completion_length=4,
                  num_generations=2, use_vllm=False, **kwargs)


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_with_a_peft_config_is_healthy_with_generation_and_kl_reference_in_the_step(tmp_path, beta):
    """The step generates its completions (no_grad, adapter on) and, with beta > 0, scores the KL reference with
    the adapter disabled (no_grad): neither is a fault."""
    diagnosis = _grpo(tmp_path, peft_config=_lora(), beta=beta)
    _assert_healthy(diagnosis)
    assert _no_grad_calls(diagnosis, disabled=False), "the generation was not seen in the step"
    assert bool(_no_grad_calls(diagnosis, disabled=True)) == (beta > 0)


def test_grpo_with_a_reward_no_completion_earns_gets_exactly_zero_gradients(tmp_path):
    """A format reward the untrained model never earns: equal rewards in every group, zero advantages, and a
    policy gradient that is exactly zero; the adapter does not learn."""
    diagnosis = _grpo(tmp_path, peft_config=_lora(), reward_funcs=trl_stack.format_reward)
    assert diagnosis.codes("error") == ("grad-zero",), diagnosis.report()
    assert diagnosis.codes("warning") == ()


# Re-training an existing adapter: TRL copies it into a frozen "ref" adapter and switches to it (set_adapter)
# under no_grad for the reference pass inside the step. It was a false lora-frozen; now a frozen-reference info.
@pytest.mark.parametrize("trainer", ["dpo", "grpo"])
def test_retraining_a_loaded_adapter_with_a_ref_adapter_copy_is_healthy(tmp_path, trainer):
    tokenizer = trl_stack.tiny_tokenizer()
    model = _loaded(tokenizer, _saved_adapter(tokenizer, tmp_path / "sft-adapter"), is_trainable=True)
    diagnosis = _dpo(tmp_path, model=model) if trainer == "dpo" else _grpo(tmp_path, model=model, beta=0.04)
    assert "ref" in diagnosis.trace.peft_configs[next(iter(diagnosis.trace.peft_configs))]
    _assert_healthy(diagnosis)
    reference, = [f for f in diagnosis.findings if f.code == "frozen-reference"]
    assert reference.adapters == ("ref",) and "reference adapters (frozen, active only with grad off): ref" in (
        diagnosis.report())
