"""The Trainer callback with the real transformers Trainer on CPU: saved run and graph, stop on error."""

import shutil

import lora_trace

from ..helpers import hook_snapshot, load_example


def _example():
    return load_example("hf_trainer")


def test_the_first_step_is_diagnosed_saved_and_drawn(tmp_path):
    callback = _example().main(["--out", str(tmp_path)])
    assert [step for step, _ in callback.diagnoses] == [0]
    step, diagnosis = callback.diagnoses[0]
    assert diagnosis.ok and diagnosis.trace.optimizer_steps == 1 and diagnosis.trace.backward
    saved = lora_trace.load(tmp_path / "lora-trace" / "step-0.json")
    assert saved.findings == diagnosis.findings
    if shutil.which("dot"):
        assert (tmp_path / "lora-trace" / "step-0.svg").read_text().lstrip().startswith("<?xml")


def test_a_frozen_adapter_stops_training_after_the_first_step(tmp_path):
    callback = _example().main(["--out", str(tmp_path), "--freeze-lora"])
    (_, diagnosis), = callback.diagnoses
    assert diagnosis.codes("error") == ("lora-frozen",)


def test_every_n_steps_and_no_hook_left_behind(tmp_path):
    example = _example()
    import torch
    from transformers import Trainer, TrainingArguments

    from lora_trace.integrations import LoraTraceCallback

    model = example.build(freeze_lora=False)
    before = hook_snapshot(model)
    callback = LoraTraceCallback(every_n_steps=2, render=False)
    ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
            callbacks=[callback]).train()
    assert [step for step, _ in callback.diagnoses] == [0, 2]
    assert hook_snapshot(model) == before


def test_a_model_in_eval_mode_before_training_gets_no_eval_warning(tmp_path):
    """from_pretrained leaves a model in eval mode until the Trainer's training_step calls train(): the mode
    is read when the LoRA layers run, so this healthy run gets no warning (issue 15, item 2)."""
    import torch
    from transformers import Trainer, TrainingArguments

    from lora_trace.integrations import LoraTraceCallback

    model = _example().build(False).eval()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    callback = LoraTraceCallback()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
            callbacks=[callback]).train()
    (_, diagnosis), = callback.diagnoses
    assert [f.severity for f in diagnosis.findings] == ["info"], diagnosis.report()


def test_raise_on_error_fails_the_run_loudly_with_the_diagnosis_and_no_hook_left(tmp_path):
    import pytest
    import torch
    from transformers import Trainer, TrainingArguments

    from lora_trace.integrations import LoraTraceCallback

    model = _example().build(freeze_lora=True)
    model.base_model.model.lm_head.requires_grad_(True)
    before = hook_snapshot(model)
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
                      callbacks=[LoraTraceCallback(raise_on_error=True, render=False)])
    with pytest.raises(lora_trace.AdapterProblemError, match="lora-frozen") as raised:
        trainer.train()
    assert raised.value.diagnosis.codes("error") == ("lora-frozen",)
    assert trainer.state.global_step == 1 and hook_snapshot(model) == before
