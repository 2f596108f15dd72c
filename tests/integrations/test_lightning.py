"""The Lightning callback with the real Lightning Trainer on CPU: a loss computed in training_step outside the
model, stop/raise on error, a step that crashes, gradient accumulation, artefacts under the logger's folder."""

import pytest

pytest.importorskip("lightning")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

import lora_trace  # noqa: E402
from lora_trace.integrations.lightning import LoraTraceLightningCallback  # noqa: E402

from ..helpers import hook_snapshot  # noqa: E402


class TinyLM(L.LightningModule):
    """A LoRA causal LM whose loss is computed here, from the logits, as Lightning users write it."""

    def __init__(self, *, freeze_lora: bool = False, checkpoint: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                             intermediate_size=64, vocab_size=64)
        self.model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        if freeze_lora:  # an adapter loaded without is_trainable=True; the head stays trainable
            self.model.requires_grad_(False)
            self.model.base_model.model.lm_head.requires_grad_(True)
        if checkpoint:  # reentrant checkpointing, inputs frozen: the loss has no grad_fn, backward raises
            self.model.base_model.model.activation_checkpointing_enable({"use_reentrant": True})
            self.model.base_model.model.disable_input_require_grads()

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        logits = self.model(input_ids=ids).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=1e-3)


def _fit(tmp_path, module, callback, *, max_steps=2, accumulate=1):
    ids = torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=2)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accumulate_grad_batches=accumulate, callbacks=[callback])
    trainer.fit(module, loader)
    return trainer


def test_a_healthy_step_gets_no_warning_and_its_run_lands_under_the_loggers_folder(tmp_path):
    module = TinyLM()
    before = hook_snapshot(module)
    callback = LoraTraceLightningCallback()
    trainer = _fit(tmp_path, module, callback)
    (step, diagnosis), = callback.diagnoses
    assert step == 0 and diagnosis.complete and diagnosis.trace.optimizer_steps == 1
    assert [f.severity for f in diagnosis.findings] == ["info"], diagnosis.report()
    assert "note.no-loss" not in diagnosis.trace.notes
    saved = lora_trace.load(f"{trainer.log_dir}/lora-trace/step-0.json")
    assert saved.findings == diagnosis.findings and hook_snapshot(module) == before


def test_a_frozen_adapter_stops_training_after_the_first_step(tmp_path):
    callback = LoraTraceLightningCallback(stop_on_error=True, render=False)
    trainer = _fit(tmp_path, TinyLM(freeze_lora=True), callback, max_steps=5)
    (_, diagnosis), = callback.diagnoses
    assert diagnosis.codes("error") == ("lora-frozen",) and trainer.global_step == 1


def test_raise_on_error_fails_the_fit_loudly_with_the_diagnosis(tmp_path):
    callback = LoraTraceLightningCallback(raise_on_error=True, render=False)
    with pytest.raises(lora_trace.AdapterProblemError, match="lora-frozen") as raised:
        _fit(tmp_path, TinyLM(freeze_lora=True), callback, max_steps=5)
    assert raised.value.diagnosis.codes("error") == ("lora-frozen",)


def test_a_step_that_crashes_is_diagnosed_from_the_exception_lightning_hands_over(tmp_path):
    module = TinyLM(checkpoint=True)
    before = hook_snapshot(module)
    callback = LoraTraceLightningCallback(render=False)
    with pytest.raises(RuntimeError, match="does not require grad"):
        _fit(tmp_path, module, callback)
    assert callback.diagnoses == [(0, callback.crashed)]
    assert not callback.crashed.complete and callback.crashed.root_cause.code == "checkpoint-no-grad"
    assert "does not require grad" in callback.crashed.trace.error and hook_snapshot(module) == before


def test_an_accumulation_window_is_one_traced_step_and_every_n_counts_optimizer_steps(tmp_path):
    callback = LoraTraceLightningCallback(every_n_steps=2, render=False)
    _fit(tmp_path, TinyLM(), callback, max_steps=3, accumulate=2)
    assert [step for step, _ in callback.diagnoses] == [0, 2]
    for _, diagnosis in callback.diagnoses:
        assert diagnosis.trace.optimizer_steps == 1 and diagnosis.ok, diagnosis.report()
        assert {a.count for a in diagnosis.trace.arrivals} == {2}  # both micro-batches' gradients


def test_watch_notes_a_learning_rate_schedule_that_reaches_zero(tmp_path):
    class Decaying(TinyLM):
        def configure_optimizers(self):
            optimizer = super().configure_optimizers()
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 2 else 0.0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    callback = LoraTraceLightningCallback(watch=True, render=False)
    trainer = _fit(tmp_path, Decaying(), callback, max_steps=5)
    assert callback.monitor is None  # ended with the run
    saved = lora_trace.load(f"{trainer.log_dir}/lora-trace/watch-step-3.json")
    assert saved.codes("error") == ("not-updated",) and saved.trace.optimizer_steps == 1  # Adam stepped before
    assert "the schedule has reached 0" in saved.findings[0].message
