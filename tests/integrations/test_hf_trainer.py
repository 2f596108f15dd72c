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



def test_a_warm_up_from_zero_gets_no_warning_at_its_first_step(tmp_path):
    """The Trainer's linear warm-up runs step 0 at a learning rate of 0: AdamW's empty state shows it is the
    optimizer's first step, so the adapter not moving is information, not a warning on a healthy run."""
    import torch
    from transformers import Trainer, TrainingArguments

    from lora_trace.integrations import LoraTraceCallback

    model = _example().build(False)
    ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    callback = LoraTraceCallback(every_n_steps=1, render=False)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, warmup_steps=2, per_device_train_batch_size=2,
                             report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
            callbacks=[callback]).train()
    first = callback.diagnoses[0][1]
    assert set(first.trace.optimizer.step_lrs) == {0.0} and first.trace.optimizer.first_step is True
    assert [(f.code, f.severity) for f in first.findings if f.code == "not-updated"] == [("not-updated", "info")]
    assert [f.code for _, d in callback.diagnoses for f in d.findings if f.severity != "info"] == []

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


def _crashing_trainer(tmp_path, callback):
    """Reentrant checkpointing with frozen inputs: the loss has no grad_fn and the Trainer's backward raises.
    transformers adds the input-grad hook for text models itself; removing it stands for a model whose main
    input is not input_ids (an audio or vision encoder), where it does not."""
    import torch
    from transformers import Trainer, TrainingArguments

    model = _example().build(False)
    model.base_model.model.activation_checkpointing_enable({"use_reentrant": True})
    model.base_model.model.disable_input_require_grads()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    return model, Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
                          callbacks=[callback])


def test_a_step_that_crashes_is_still_diagnosed_and_the_trainers_exception_is_untouched(tmp_path, caplog):
    import logging

    import pytest

    from lora_trace.integrations import LoraTraceCallback

    callback = LoraTraceCallback(render=False)
    model, trainer = _crashing_trainer(tmp_path, callback)
    with pytest.raises(RuntimeError, match="does not require grad"):
        trainer.train()
    with caplog.at_level(logging.INFO, logger="lora_trace"):
        diagnosis = callback.close()
    assert diagnosis is callback.crashed and callback.diagnoses == [(0, diagnosis)]
    assert not diagnosis.complete and diagnosis.root_cause.code == "checkpoint-no-grad"
    assert lora_trace.load(tmp_path / "lora-trace" / "step-0.json").findings == diagnosis.findings
    record, = [r for r in caplog.records if r.name == "lora_trace"]
    assert record.levelno == logging.ERROR and "checkpoint-no-grad" in record.getMessage()
    assert callback.close() is None and hook_snapshot(model) == hook_snapshot(_example().build(False))


def test_a_crashed_script_gets_its_diagnosis_logged_and_saved_at_exit_with_its_exit_code_kept(tmp_path):
    import pathlib
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(pathlib.Path(__file__).parents[2])!r}]\n"
        "from tests.integrations.test_hf_trainer import _crashing_trainer\n"
        "from lora_trace.integrations import LoraTraceCallback\n"
        f"_crashing_trainer({str(tmp_path)!r}, LoraTraceCallback(render=False))[1].train()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    crash = done.stderr.index("does not require grad")
    line = done.stderr.index("lora-trace step 0: the step raised (RuntimeError: element 0 of tensors")
    assert crash < line and "LoRA problems: checkpoint-no-grad" in done.stderr[line:]
    saved = lora_trace.load(tmp_path / "lora-trace" / "step-0.json")
    assert saved.root_cause.code == "checkpoint-no-grad" and not saved.complete


def test_the_log_line_is_info_when_healthy_and_names_the_warnings(tmp_path, caplog):
    """A healthy step logs at INFO; one with a warning finding (half the target_modules matched nothing)
    logs at WARNING and names it, instead of 'ok (errors: none)' at WARNING for both."""
    import logging

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments

    from lora_trace.integrations import LoraTraceCallback

    def run(targets):
        torch.manual_seed(0)
        config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                             intermediate_size=64, vocab_size=64)
        model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=targets))
        ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                                 report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lora_trace"):
            Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
                    callbacks=[LoraTraceCallback(render=False)]).train()
        record, = [r for r in caplog.records if r.name == "lora_trace"]
        return record.levelno, record.getMessage()

    level, line = run(["q_proj", "v_proj"])
    assert level == logging.INFO and line.startswith("lora-trace step 0: ok - report: lora-trace show "), line
    level, line = run(["q_proj", "v_prj"])
    assert level == logging.WARNING and line.startswith("lora-trace step 0: ok, with warnings: target-"), line


def test_watch_notes_an_adapter_frozen_mid_run_and_traces_the_next_step(tmp_path, caplog):
    """watch=True: counters on every step; a callback freezing layer 1's LoRA at step 3 is a state change,
    logged, and step 4 is traced in full (lora-frozen) and saved."""
    import logging

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from lora_trace.integrations import LoraTraceCallback

    model = _example().build(False)
    before = hook_snapshot(model)

    class FreezeLayer1(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                for name, param in model.named_parameters():
                    if "layers.1." in name and "lora_" in name:
                        param.requires_grad_(False)

    ids = torch.randint(0, 64, (12, 12), generator=torch.Generator().manual_seed(0))
    callback = LoraTraceCallback(watch=True, render=False)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    with caplog.at_level(logging.INFO, logger="lora_trace"):
        Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
                callbacks=[FreezeLayer1(), callback]).train()
    assert [step for step, _ in callback.diagnoses] == [0] and callback.monitor is None  # ended with the run
    symptom_lines = [r.getMessage() for r in caplog.records if "lora-trace watch: step" in r.getMessage()]
    assert symptom_lines and "state-change" in symptom_lines[0], symptom_lines
    saved = lora_trace.load(tmp_path / "lora-trace" / "watch-step-4.json")
    assert saved.root_cause.code == "lora-frozen"
    assert hook_snapshot(model) == before


def test_watch_and_every_n_steps_together_trace_a_step_once_and_never_break_training(tmp_path):
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from lora_trace.integrations import LoraTraceCallback

    model = _example().build(False)

    class FreezeAtStep1(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                for name, param in model.named_parameters():
                    if "layers.1." in name and "lora_" in name:
                        param.requires_grad_(False)

    ids = torch.randint(0, 64, (10, 12), generator=torch.Generator().manual_seed(0))
    callback = LoraTraceCallback(watch=True, every_n_steps=2, render=False)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": r, "labels": r} for r in ids],
                      callbacks=[FreezeAtStep1(), callback])
    trainer.train()  # the symptom at step 1 has the watch trace step 2, which every_n_steps=2 is due to trace too
    assert trainer.state.global_step == 5
    assert [step for step, _ in callback.diagnoses] == [0, 4]  # step 2 is the watch's
    assert lora_trace.load(tmp_path / "lora-trace" / "watch-step-2.json").root_cause.code == "lora-frozen"
