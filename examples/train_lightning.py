"""A Lightning script that knows nothing of lora-trace; `lora-trace run` diagnoses it unchanged:

    lora-trace run --out runs/lightning -- python examples/train_lightning.py --bug frozen

The loss is computed in training_step from the logits, outside the model, as Lightning users write it.
--bug frozen loads the adapter frozen (no is_trainable=True) and trains the head only: lora-frozen.
To trace from inside instead: `callbacks=[lora_trace.integrations.LoraTraceLightningCallback()]`.
"""

from __future__ import annotations

import argparse
import tempfile

import lightning as L
import tiny
import torch


class TinyLM(L.LightningModule):
    def __init__(self, frozen: bool) -> None:
        super().__init__()
        self.model = tiny.lora_model()
        if frozen:
            self.model.requires_grad_(False)
            self.model.base_model.model.lm_head.requires_grad_(True)

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        logits = self.model(input_ids=ids).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=1e-3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=("none", "frozen"), default="none")
    args = parser.parse_args(argv)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tiny.token_rows(8)), batch_size=2)
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, default_root_dir=out, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(TinyLM(frozen=args.bug == "frozen"), loader)
    print("trained")


if __name__ == "__main__":
    main()
