"""Messages of the update checks: values that did not move over an optimizer step, and why (rules/updates.py)."""

from __future__ import annotations

UPDATES: dict[str, dict[str, str]] = {
    "not-updated": {"en": "{params} {kind} parameters got non-zero gradients and sit in the optimizer, but their "
                          "values did not change over the step ({modules}): {why}. Learning rates: {lrs}.",
                    "zh": "{params} 个 {kind} 参数得到了非零梯度且在优化器中，但这一步之后数值没有变化（{modules}）："
                          "{why}。学习率：{lrs}。"},
    "why.warmup": {"en": "a learning rate of 0 set by the schedule (its initial lr is {initial}): expected for the first step or two of a warm-up; later in a run it means the schedule has reached 0",
                   "zh": "调度器把学习率设为 0（其初始学习率为 {initial}）：在预热的前一两步属于正常；在训练后期则表示调度已降到 0"},
    "why.warmup-start": {"en": "the optimizer's first step ran at a learning rate of 0 set by the schedule (its initial lr is {initial}), which raised it above 0 by the end of the step: a warm-up from 0 begins this way, and this step moves nothing",
                         "zh": "优化器的第一步使用了调度器设定的学习率 0（其初始学习率为 {initial}），调度器在这一步结束时已把它调到 0 以上：从 0 开始的预热就是这样开始的，这一步不改变参数"},
    "not-updated.fix.warmup": {"en": "Nothing to fix at a warm-up's start: the next steps update the adapter (a schedule that starts above 0, LambdaLR with (step + 1) / warmup, updates from the first step). Later in a run, check the schedule's end: a decay to 0 before the last step stops the adapter learning.",
                               "zh": "在预热开始时无需修复：后续步骤会更新适配器（让调度从大于 0 开始，LambdaLR 使用 (step + 1) / warmup，可从第一步开始更新）。在训练后期，请检查调度的终点：在最后一步之前衰减到 0 会让适配器停止学习。"},
    "not-updated.decayed": {"en": "The adapter's parameters were updated at step {updated} of the {steps} traced, then stopped moving from step {stalled} on ({modules}): the learning-rate schedule reached 0 while training goes on, so the adapter learns nothing from then on.",
                            "zh": "在追踪的 {steps} 步中，适配器参数在第 {updated} 步仍被更新，从第 {stalled} 步起不再变化（{modules}）：学习率调度在训练仍在进行时降到了 0，此后适配器学不到任何东西。"},
    "not-updated.fix.schedule": {"en": "Check the schedule: its total steps (num_training_steps, T_max, total_steps) must cover the whole run and a decay should end above 0; a warm-up should leave 0 after the optimizer's first step (step the scheduler once per optimizer step, or start it at (step + 1) / warmup).",
                                 "zh": "检查学习率调度：其总步数（num_training_steps、T_max、total_steps）必须覆盖整个训练，衰减应停在大于 0 的值；预热应在优化器第一步之后离开 0（每个优化器步调用一次调度器，或从 (step + 1) / warmup 开始）。"},
    "not-updated.decayed.fix": {"en": "Check the schedule's length: its total steps (num_training_steps, T_max, total_steps) must cover the whole run, and a decay should end at a small learning rate rather than 0 before the last step.",
                                "zh": "检查调度的长度：其总步数（num_training_steps、T_max、total_steps）必须覆盖整个训练过程，衰减应在最后一步之前停在一个较小的学习率而不是 0。"},
    "not-updated.rounded": {"en": "{params} {kind} parameters got non-zero gradients too small to move them ({modules}): the step SGD takes is under half the float spacing of the values (of every one, or of the typical one where it cannot be shown for every one), so the update rounded away. Expected while the other factor is still near zero (early steps from a zero-initialised factor); they move as it grows.",
                            "zh": "{params} 个 {kind} 参数得到的非零梯度太小，无法改变其数值（{modules}）：SGD 的更新步长小于这些数值浮点间距的一半（每个数值，或在无法逐一证明时的典型数值），更新被舍入掉了。在另一个因子仍接近零时（从零初始化的因子开始的前几步）属于正常；它增长后这些参数就会变化。"},
    "not-updated.rounded.fix": {"en": "Nothing to fix if it passes within a few steps. If it lasts, the adapter learns too slowly: raise the learning rate, or use an adaptive optimizer (AdamW), and keep adapter weights in float32 (PEFT's autocast_adapter_dtype) rather than bf16/fp16.",
                                "zh": "如果几步之内消失则无需修复。如果持续存在，说明适配器学习过慢：提高学习率，或使用自适应优化器（AdamW），并让适配器权重保持 float32（PEFT 的 autocast_adapter_dtype），而不是 bf16/fp16。"},
    "why.cleared": {"en": "their .grad was None when optimizer.step() ran: the gradients arrived, then something cleared them before the update (optimizer.zero_grad() or model.zero_grad() between backward() and step()?)",
                    "zh": "optimizer.step() 运行时它们的 .grad 为 None：梯度已经到达，但在更新之前被清除了（是否在 backward() 和 step() 之间调用了 optimizer.zero_grad() 或 model.zero_grad()？）"},
    "not-updated.fix.cleared": {"en": "Clear gradients before the forward or right after optimizer.step(), never between backward() and step(): `loss.backward(); optimizer.step(); optimizer.zero_grad()`.",
                                "zh": "在前向之前或 optimizer.step() 之后立即清除梯度，不要在 backward() 和 step() 之间清除：`loss.backward(); optimizer.step(); optimizer.zero_grad()`。"},
    "why.schedule-ended": {"en": "a learning rate of 0 set by the schedule (its initial lr is {initial}) although the optimizer had stepped before, and still 0 when the step ended: the schedule has reached 0, or its warm-up holds 0 past the optimizer's first step (a schedule stepped per epoch while the optimizer steps per batch?); either way the adapter learns nothing while it stays there",
                           "zh": "调度器把学习率设为 0（其初始学习率为 {initial}），而优化器此前已经更新过，且这一步结束时仍为 0：学习率调度已降到 0，或者它的预热在优化器第一步之后仍保持为 0（调度器按 epoch 更新而优化器按 batch 更新？）；无论哪种情况，只要学习率停在 0，适配器就学不到任何东西"},
    "why.precision": {"en": "the typical update (about the learning rate for an adaptive optimizer such as Adam, the learning rate times the typical gradient for SGD) is under half the float spacing of their typical value, so their own precision rounds it away (bf16/fp16 adapter weights at a small learning rate)",
                      "zh": "典型的更新量（对 Adam 等自适应优化器约等于学习率，对 SGD 为学习率乘以典型梯度）小于其典型数值浮点间距的一半，因此被其自身精度舍入掉了（bf16/fp16 的适配器权重配合较小的学习率）"},
    "not-updated.fix.precision": {"en": "Keep the adapter weights in float32 while the base model stays in bf16/fp16: PEFT's autocast_adapter_dtype=True (the default) does it at get_peft_model, and a later model.to(torch.bfloat16) undoes it: cast there, or before building the optimizer `for p in model.parameters(): p.data = p.data.float() if p.requires_grad else p.data`. Or train under torch.autocast with float32 weights.",
                                  "zh": "在基础模型保持 bf16/fp16 的同时，让适配器权重保持 float32：PEFT 的 autocast_adapter_dtype=True（默认）在 get_peft_model 时这样做，之后的 model.to(torch.bfloat16) 会撤销它：请在那里转换，或在创建优化器之前 `for p in model.parameters(): p.data = p.data.float() if p.requires_grad else p.data`。或者用 float32 权重配合 torch.autocast 训练。"},
    "why.unmoved": {"en": "the optimizer ran at a learning rate above 0 and left them as they were (code around optimizer.step() that skips it, values restored after the step, or updates below their float precision?)",
                    "zh": "优化器以大于 0 的学习率运行，却没有改变它们（optimizer.step() 周围的代码跳过了它？更新之后数值被恢复？还是更新量低于其浮点精度？）"},
    "why.zeroed": {"en": "their gradients were all zero when optimizer.step() ran, though non-zero ones had arrived: code between backward() and step() zeroed them (clip_grad_norm_ with max_norm=0, a mask multiplied into the gradients, zero_grad(set_to_none=False)?)",
                   "zh": "optimizer.step() 运行时它们的梯度全为零，尽管之前到达的梯度非零：backward() 与 step() 之间的代码把它们清零了（max_norm=0 的 clip_grad_norm_？乘到梯度上的掩码？zero_grad(set_to_none=False)？）"},
    "not-updated.fix.zeroed": {"en": "Look at what runs between backward() and optimizer.step(): gradient clipping needs max_norm > 0 (1.0 is usual), a gradient mask must keep the adapter's entries, and zero_grad() belongs before the forward or after the step.",
                               "zh": "检查 backward() 与 optimizer.step() 之间运行的代码：梯度裁剪需要 max_norm > 0（常用 1.0），梯度掩码必须保留适配器的条目，zero_grad() 应放在前向之前或更新之后。"},
    "why.lr-zero": {"en": "a learning rate of 0", "zh": "学习率为 0"},
    "why.scaler": {"en": "the GradScaler found inf/NaN in the scaled gradients and skipped optimizer.step() (normal now and then while the scale calibrates; a problem when every step skips)",
                   "zh": "GradScaler 在缩放后的梯度中发现 inf/NaN，跳过了 optimizer.step()（缩放系数校准期间偶尔发生是正常的；每一步都跳过则有问题）"},
    "not-updated.fix": {"en": "Check the learning-rate schedule (warm-up starting at 0), and the GradScaler's scale "
                              "and inf checks.",
                        "zh": "检查学习率调度（从 0 开始的预热）以及 GradScaler 的缩放和 inf 检查。"},
}
