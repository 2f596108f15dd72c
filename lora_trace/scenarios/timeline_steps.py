"""The steps of the timeline scenarios: the model changes during the step, or a gradient arrives exactly zero.

Each builder returns a `Scenario` on a tiny PEFT Qwen2ForCausalLM (hidden 32, 2 layers, vocab 64, eager
attention). LoRA is built with `init_lora_weights=False`, so `lora_B` is not zero and an exactly-zero gradient
is never the normal first-step one. `timeline.py` lists the cases and documents the knobs.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ExpectedFinding, Scenario, Truth, marked_line

VOCAB, HIDDEN, LAYERS = 64, 32, 2
INVOCATION = [61, 62, 63]  # the aLoRA invocation sequence; batches draw tokens below it
PAD = 0  # batches draw tokens from 1, so a "padding" mask built from PAD is all zero


@contextmanager
def quiet() -> Iterator[None]:
    """transformers and PEFT warn on every tiny build (deprecations, the adapter name "a"); keep output clean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
        warnings.filterwarnings("ignore", message=r".*should not be contained in the prefix.*")
        yield


def qwen2(seed: int) -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=VOCAB)
    config._attn_implementation = "eager"
    return Qwen2ForCausalLM(config)


def lora(**overrides: Any) -> Any:
    from peft import LoraConfig

    options: dict[str, Any] = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    options.update(overrides)
    return LoraConfig(**options)


def peft_qwen2(seed: int, config: Any = None, adapter_name: str = "default") -> nn.Module:
    from peft import get_peft_model

    with quiet():
        model = get_peft_model(qwen2(seed), config or lora(), adapter_name=adapter_name)
    model.train()
    return model


def batch_of(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, INVOCATION[0], (2, 12), generator=generator)
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def lora_names(model: nn.Module, where: Callable[[str], bool] = lambda name: True) -> frozenset[str]:
    return frozenset(n for n, _ in model.named_parameters() if ".lora_" in n and where(n))


def adamw(model: nn.Module, lr: float = 1e-2) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def finding(code: str, severity: str = "error", source: tuple[str, int] | None = None) -> ExpectedFinding:
    return ExpectedFinding(code, severity, (), source)


def scenario(name: str, model: nn.Module, step: Callable[[nn.Module], torch.Tensor], batch: Any, *,
             grad: frozenset[str] | None = None, zero: frozenset[str] = frozenset(),
             findings: tuple[ExpectedFinding, ...] = (), optimizer: torch.optim.Optimizer | None = None,
             **knobs: Any) -> Scenario:
    """`grad` defaults to every LoRA parameter; `zero` those of them whose gradient is exactly zero."""
    every = lora_names(model)
    truth = Truth(every, every if grad is None else grad, frozenset(), findings)
    knobs = {"runs_backward": False, "runs_optimizer_step": False, "scheduler": None, "zero_grad_params": zero,
             "frozen_at_backward": frozenset(), "adapters": {}, "healthy": not findings, "tolerated": (),
             "first_step_updates": not findings, "peft_state_after": {}, **knobs}
    return Scenario(name, model, step, optimizer if optimizer is not None else adamw(model), truth, knobs, batch)


# 1. set_adapter inside the step ---------------------------------------------------------------------------


def set_adapter_mid_step(seed: int) -> Scenario:
    model = peft_qwen2(seed, adapter_name="a")
    with quiet():
        model.add_adapter("b", lora())  # PEFT adds "b" frozen; the user makes both trainable
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    batch = batch_of(seed)

    def step(m: nn.Module) -> torch.Tensor:
        m.set_adapter("b")  # fault: set-adapter
        return m(**batch).loss

    in_a = lora_names(model, lambda n: ".a.weight" in n)
    return scenario("set-adapter-mid-step", model, step, batch, grad=lora_names(model, lambda n: ".b.weight" in n),
                    findings=(finding("adapter-inactive", source=marked_line(step, "set-adapter")),),
                    frozen_at_backward=in_a, adapters={"adapter-inactive": ("a",)},
                    peft_state_after={"active_adapter": "b"})


# 2. merge_adapter for a weight sync ------------------------------------------------------------------------


def merged_weight_sync(seed: int) -> Scenario:
    model, batch, synced = peft_qwen2(seed), batch_of(seed), []

    def step(m: nn.Module) -> torch.Tensor:
        m.merge_adapter()  # fault: merge
        with torch.no_grad():
            synced.append({k: v.clone() for k, v in m.state_dict().items() if ".lora_" not in k})
        return m(**batch).loss

    return scenario("merged-weight-sync", model, step, batch, grad=frozenset(),
                    findings=(finding("adapter-inactive", source=marked_line(step, "merge")),),
                    peft_state_after={"merged": True}, synced=synced)


def merge_copy_unmerge(seed: int) -> Scenario:
    model, batch, synced = peft_qwen2(seed), batch_of(seed), []

    def step(m: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            m.merge_adapter()
            synced.append({k: v.clone() for k, v in m.state_dict().items() if ".lora_" not in k})
            m.unmerge_adapter()
        return m(**batch).loss

    return scenario("merge-copy-unmerge", model, step, batch, synced=synced)


# 3. disable_adapter() around a forward ---------------------------------------------------------------------


def disable_adapter_forward(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed), batch_of(seed)

    def step(m: nn.Module) -> torch.Tensor:
        with m.disable_adapter():  # fault: disable-adapter
            loss = m(**batch).loss
        return loss

    return scenario("disable-adapter-forward", model, step, batch, grad=frozenset(),
                    findings=(finding("adapter-inactive", source=marked_line(step, "disable-adapter")),))


def sequence_logp(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1).sum(-1)


def dpo_reference_pass(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed), batch_of(seed)
    ids = batch["input_ids"]

    def step(m: nn.Module) -> torch.Tensor:
        with torch.no_grad(), m.disable_adapter():  # the reference: base weights, no graph
            reference = sequence_logp(m(input_ids=ids).logits, ids)
        policy = sequence_logp(m(input_ids=ids).logits, ids)
        return -F.logsigmoid(0.1 * (policy - reference)).mean()

    return scenario("dpo-reference-pass", model, step, batch)


# 4. disable_adapter_layers() and never enable_adapter_layers() ---------------------------------------------


def disable_layers_never_reenabled(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed), batch_of(seed)

    def step(m: nn.Module) -> torch.Tensor:
        m.base_model.disable_adapter_layers()  # fault: disable-layers
        return m(**batch).loss

    return scenario("disable-layers-never-reenabled", model, step, batch, grad=frozenset(),
                    findings=(finding("adapter-inactive", source=marked_line(step, "disable-layers")),),
                    frozen_at_backward=lora_names(model), peft_state_after={"disabled": True})


# 5. a gradient arrives and is exactly zero ----------------------------------------------------------------


def lm_step(batch: dict[str, torch.Tensor]) -> Callable[[nn.Module], torch.Tensor]:
    def step(m: nn.Module) -> torch.Tensor:
        return m(**batch).loss

    return step


def grad_zero_alpha0(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed, lora(lora_alpha=0)), batch_of(seed)  # PEFT: scaling = 0 / r = 0.0
    every = lora_names(model)
    return scenario("grad-zero-alpha0", model, lm_step(batch), batch, zero=every,
                    findings=(finding("adapter-inactive"),),
                    judgement="scaled to zero: design.md lists it under adapter-inactive (as causal_lm[scaled-zero]);"
                              " the observed symptom is grad-zero, folded into adapter-inactive")


def grad_zero_dropout1(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed, lora(lora_dropout=1.0)), batch_of(seed)  # nn.Dropout(p=1.0): zeros in train()
    return scenario("grad-zero-dropout1", model, lm_step(batch), batch, zero=lora_names(model),
                    findings=(finding("grad-zero"),))


def grad_zero_mask(seed: int) -> Scenario:
    """Masked mean pooling with an inverted mask: `== PAD` where `!= PAD` was meant; no padding in the batch."""
    model, batch = peft_qwen2(seed), batch_of(seed)
    target = torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(seed + 1))

    def step(m: nn.Module) -> torch.Tensor:
        hidden = m(input_ids=batch["input_ids"], output_hidden_states=True).hidden_states[-1]
        mask = (batch["input_ids"] == PAD).unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # fault: zero-mask
        return F.mse_loss(pooled, target)

    return scenario("grad-zero-mask", model, step, batch, zero=lora_names(model),
                    findings=(finding("grad-zero", source=marked_line(step, "zero-mask")),))


def grad_zero_alora_absent(seed: int) -> Scenario:
    """Activated LoRA (peft >= 0.17): rows without the invocation sequence run the base model only."""
    model = peft_qwen2(seed, lora(alora_invocation_tokens=INVOCATION, task_type="CAUSAL_LM"))
    batch = batch_of(seed)  # tokens below INVOCATION[0]: no row holds the invocation sequence
    return scenario("grad-zero-alora-absent", model, lm_step(batch), batch, zero=lora_names(model),
                    findings=(finding("grad-zero"),))


# 6. a frozen reference copy beside the policy -------------------------------------------------------------


class PolicyWithReference(nn.Module):
    """What a KL-regularised trainer holds: the trained policy and a frozen deep copy of it."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.ref = copy.deepcopy(policy).requires_grad_(False).eval()


def frozen_reference_copy(seed: int) -> Scenario:
    holder, batch = PolicyWithReference(peft_qwen2(seed)), batch_of(seed)

    def step(m: nn.Module) -> torch.Tensor:
        out = m.policy(**batch)
        with torch.no_grad():
            ref_logits = m.ref(input_ids=batch["input_ids"]).logits
        kl = F.kl_div(F.log_softmax(ref_logits, -1), F.log_softmax(out.logits, -1), log_target=True,
                      reduction="batchmean")
        return out.loss + 0.1 * kl

    return scenario("frozen-reference-copy", holder, step, batch, grad=lora_names(holder, lambda n: "policy." in n),
                    optimizer=adamw(holder.policy), reference=holder.ref)


# 7. a learning rate of 0 at the first step ----------------------------------------------------------------


def training_step(batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                  scheduler: Any = None) -> Callable[[nn.Module], torch.Tensor]:
    """A whole training step, as a loop body writes it: zero_grad, forward, backward, step, schedule."""

    def step(m: nn.Module) -> torch.Tensor:
        optimizer.zero_grad()
        loss = m(**batch).loss
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss

    return step


def warmup_lr_zero(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed), batch_of(seed)
    optimizer = adamw(model, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / 10))  # lr 0 at step 0
    return scenario("warmup-lr-zero", model, training_step(batch, optimizer, scheduler), batch, optimizer=optimizer,
                    runs_backward=True, runs_optimizer_step=True, scheduler=scheduler, first_step_updates=False,
                    tolerated=(("not-updated", "warning"),),
                    judgement="a warning at most: the group's initial_lr is 1e-3 and LambdaLR warms up from 0")


def lr_zero_no_schedule(seed: int) -> Scenario:
    model, batch = peft_qwen2(seed), batch_of(seed)
    optimizer = adamw(model, lr=0.0)
    return scenario("lr-zero-no-schedule", model, training_step(batch, optimizer), batch, optimizer=optimizer,
                    findings=(finding("not-updated"),), runs_backward=True, runs_optimizer_step=True,
                    first_step_updates=False)
