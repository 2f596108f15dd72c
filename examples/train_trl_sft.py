"""A TRL SFTTrainer script with `peft_config` that knows nothing of lora-trace (tokenizer and model built
offline); `lora-trace run` diagnoses it unchanged:

    lora-trace run --out runs/sft -- python examples/train_trl_sft.py --bug typo

--bug typo writes `target_modules=["q_proj", "v_prj"]`: PEFT silently adapts q_proj only; lora-trace warns
(target-unmatched) and names the modules meant. To trace from inside: `callbacks=[LoraTraceCallback()]`.
"""

from __future__ import annotations

import argparse
import tempfile

from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from lora_trace.scenarios import trl_stack


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=("none", "typo"), default="none")
    args = parser.parse_args(argv)
    tokenizer = trl_stack.tiny_tokenizer()
    targets = ["q_proj", "v_prj" if args.bug == "typo" else "v_proj"]
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(output_dir=out, max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                           save_strategy="no", logging_strategy="no", disable_tqdm=True, max_length=32)
        SFTTrainer(model=trl_stack.tiny_qwen2(tokenizer), args=config, train_dataset=trl_stack.sft_dataset(),
                   processing_class=tokenizer, peft_config=LoraConfig(r=4, target_modules=targets)).train()
    print("trained")


if __name__ == "__main__":
    main()
