"""Messages of the findings only ranks together show: DDP's unused parameters, replicas that drift, a
rank that skipped a sharded block."""

from __future__ import annotations

from typing import Any

DISTRIBUTED: dict[str, dict[str, Any]] = {
    "ddp-drift": {
        "en": {"one": "{count} adapter parameter holds different values on ranks {ranks} than on rank 0 after the "
                      "step: its gradient is not averaged across ranks, so the replicas drift apart.",
               "other": "{count} adapter parameters hold different values on ranks {ranks} than on rank 0 after the "
                        "step: their gradients are not averaged across ranks, so the replicas drift apart."},
        "zh": "本步之后，有 {count} 个适配器参数在 rank {ranks} 上的值与 rank 0 不同：它们的梯度没有在各 rank 之间平均，"
              "各副本因此逐渐分离。"},
    "ddp-drift.late": {
        "en": " The model is wrapped, so most likely these parameters were added or made trainable after wrapping "
              "(DDP reduces only the parameters that required grad when it was built); an optimizer step inside "
              "no_sync(), or a per-rank re-initialisation after wrapping, shows the same.",
        "zh": " 模型已被包装，因此最可能是这些参数在包装之后才加入或设为可训练的（DDP 只对构造时需要梯度的参数做归约）；"
              "在 no_sync() 内执行优化器更新，或在包装后按 rank 重新初始化，也会表现相同。"},
    "ddp-drift.unwrapped": {
        "en": " The model given is not wrapped in DDP or FSDP although a process group runs: nothing averages its "
              "gradients.",
        "zh": " 虽然进程组在运行，但传入的模型没有被 DDP 或 FSDP 包装：没有任何东西平均它的梯度。"},
    "ddp-drift.fix": {
        "en": "Apply get_peft_model and every requires_grad change before wrapping the model in "
              "DistributedDataParallel (or accelerator.prepare), and build the optimizer after wrapping.",
        "zh": "在用 DistributedDataParallel（或 accelerator.prepare）包装模型之前完成 get_peft_model 和所有 requires_grad "
              "修改，并在包装之后创建优化器。"},
    "ddp-unused": {"en": "Across the ranks, some produced no gradient for trainable {kind} parameters: {parts}.",
                   "zh": "在多个 rank 之间，有的 rank 没有为可训练的 {kind} 参数产生梯度：{parts}。"},
    "ddp-unused.rank": {"en": "rank {rank}: {count} ({params})", "zh": "rank {rank}：{count} 个（{params}）"},
    "ddp-unused.divergent": {"en": " Ranks {ranks} took a different path than the others: these are the parameters DDP reports as unused (with find_unused_parameters=False its backward waits for them until the process-group timeout).",
                             "zh": " rank {ranks} 走了与其他 rank 不同的路径：这些就是 DDP 报告为未使用的参数（find_unused_parameters=False 时，反向传播会一直等待它们直到进程组超时）。"},
    "ddp-unused.none": {"en": " No rank used them: the per-rank findings say why.",
                        "zh": " 没有任何 rank 使用它们：各 rank 的诊断说明了原因。"},
    "sharded-skip": {
        "en": "This rank skipped {skipped}, {what}, of a sharded model, "
              "and its step raised ({error}). Under FSDP every rank all-gathers and reduce-scatters each "
              "unit it runs: a unit one rank skips leaves the others waiting in a collective this rank never "
              "joins, until the process group's timeout. The other ranks' reports show the same error with no "
              "skip.",
        "zh": "该 rank 跳过了分片模型中的 {skipped}（{what}），且这一步抛出了异常"
              "（{error}）。在 FSDP 下，每个 rank 都要对它运行的每个单元做 all-gather 和 reduce-scatter：一个 rank "
              "跳过的单元会让其他 rank 一直等待一个它永远不会参加的集合通信，直到进程组超时。其他 rank 的报告显示同样的"
              "错误但没有跳过。"},
    "sharded-skip.fix": {
        "en": "Run the same blocks on every rank: for a data-dependent branch, run the block and multiply its "
              "output by 0 (or by a mask) instead of skipping it, so every rank joins its collectives.",
        "zh": "让每个 rank 运行相同的块：对依赖数据的分支，运行该块并把它的输出乘以 0（或一个掩码），而不是跳过它，"
              "这样每个 rank 都会参加它的集合通信。"},
    "ddp-unused.fix": {"en": "Make every rank run the same {kind} layers (the same branches for every batch), or construct DDP with find_unused_parameters=True while a rank may skip some; the per-rank reports show each path.",
                       "zh": "让每个 rank 运行相同的 {kind} 层（每个批次走相同的分支），或在某些 rank 可能跳过时用 find_unused_parameters=True 构造 DDP；各 rank 的报告显示了各自的路径。"},
}
