"""A Hugging Face Trainer script that knows nothing of lora-trace; `lora-trace run` diagnoses it unchanged:

    lora-trace run --out runs/hf -- python examples/train_hf.py --bug reentrant

--bug reentrant enables reentrant activation checkpointing on a model whose inputs do not require grad (what
transformers does not fix for a model whose main input is not input_ids, such as an audio encoder): the loss has
no grad_fn and the Trainer's backward raises. The run keeps the script's exit code and still writes the
diagnosis (checkpoint-no-grad) of the step it crashed in.
"""

from __future__ import annotations

import argparse
import tempfile

import tiny
from transformers import Trainer, TrainingArguments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=("none", "reentrant"), default="none")
    args = parser.parse_args(argv)
    model = tiny.lora_model()
    if args.bug == "reentrant":
        model.base_model.model.activation_checkpointing_enable({"use_reentrant": True})
        model.base_model.model.disable_input_require_grads()
    dataset = [{"input_ids": row, "labels": row} for row in tiny.token_rows(8)]
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(output_dir=out, max_steps=2, per_device_train_batch_size=2, report_to=[],
                                     use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
        Trainer(model=model, args=training, train_dataset=dataset).train()
    print("trained")


if __name__ == "__main__":
    main()
