"""What findings say, in every language, side by side: keeping the languages next to each other is what
keeps them saying the same thing. A value is a format string, or {"one": ..., "other": ...} chosen by the
`count` field. Stdlib only."""

from __future__ import annotations

from typing import Any

FINDINGS: dict[str, dict[str, Any]] = {
    "layers": {"en": {"one": "{count} {kind} layer ({params} trainable parameters)",
                      "other": "{count} {kind} layers ({params} trainable parameters)"},
               "zh": "{count} 个 {kind} 层（{params} 个可训练参数）"},
    "grad-disabled.ran": {
        "en": "{what} in {regions} ran under torch.{mode}(){at}, so autograd recorded nothing for them and they got "
              "no gradient.",
        "zh": "{regions} 中的 {what} 在 torch.{mode}() 下运行{at}，autograd 没有记录它们，因此它们没有得到梯度。"},
    "grad-disabled.fed": {
        "en": "{what} in {regions} fed a path that ran under torch.{mode}(){at}, so no gradient came back to them.",
        "zh": "{regions} 中的 {what} 的输出经过了在 torch.{mode}() 下运行的代码{at}，梯度因此无法传回。"},
    "grad-disabled.call": {
        "en": "{what} in {regions} ran with grad switched off by `torch.set_grad_enabled(False)`{at} (a call, not a "
              "`with` block, so it stays off until switched back on), so autograd recorded nothing for them and they "
              "got no gradient.",
        "zh": "{regions} 中的 {what} 在被 `torch.set_grad_enabled(False)`{at}关闭梯度的状态下运行（这是一次调用而不是 "
              "`with` 块，梯度会一直保持关闭，直到重新打开），autograd 没有记录它们，因此它们没有得到梯度。"},
    "grad-disabled.global": {
        "en": "{what} in {regions} ran with grad already switched off when this code was called{at}: no `with "
              "torch.no_grad()` block or decorator encloses it, so grad was turned off globally earlier (a "
              "`torch.set_grad_enabled(False)` elsewhere, or a caller's no_grad). Autograd recorded nothing for them "
              "and they got no gradient.",
        "zh": "{regions} 中的 {what} 运行时梯度已被关闭{at}：没有任何 `with torch.no_grad()` 块或装饰器包住这段代码，"
              "说明梯度早先在全局被关闭（别处的 `torch.set_grad_enabled(False)`，或调用者的 no_grad）。autograd 没有记录它们，"
              "因此它们没有得到梯度。"},
    "grad-disabled.library": {
        "en": "{what} in {regions} ran with grad disabled inside library code called{at}: the library turns grad off "
              "itself (a generate() or an evaluation helper decorated with no_grad), so autograd recorded nothing for "
              "them and they got no gradient.",
        "zh": "{regions} 中的 {what} 在{at}调用的库代码内部以禁用梯度的方式运行：库自己关闭了梯度（例如用 no_grad 装饰的 "
              "generate() 或评估函数），autograd 没有记录它们，因此它们没有得到梯度。"},
    "grad-disabled.fix.library": {
        "en": "Run the training forward through the model's own forward (or the library's training entry point) "
              "instead of that library function{place}; keep the grad-free function for evaluation and generation.",
        "zh": "训练时请通过模型自身的 forward（或库的训练入口）运行前向传播，而不是{place}的那个库函数；"
              "不需要梯度的函数只用于评估和生成。"},
    "grad-disabled.fix.global": {
        "en": "Switch grad back on before the training forward (`torch.set_grad_enabled(True)`){place}, and scope "
              "any switch-off to what should not train: `with torch.no_grad():` around evaluation only.",
        "zh": "在训练前向传播之前重新打开梯度（`torch.set_grad_enabled(True)`）{place}，并把关闭梯度限制在不需要训练的部分："
              "只在评估代码外使用 `with torch.no_grad():`。"},
    "grad-disabled.fix": {
        "en": "Run the training forward with grad enabled: take the `with torch.{mode}():`{place} off the training "
              "path, or make it conditional: `with torch.set_grad_enabled(model.training):` (`self.training` "
              "inside a module's forward); keep {mode} for evaluation code only.",
        "zh": "训练时的前向传播必须启用梯度：把{place}的 `with torch.{mode}():` 移出训练路径，或改为条件形式："
              "`with torch.set_grad_enabled(model.training):`（在模块的 forward 中用 `self.training`）；"
              "只在评估代码中使用 {mode}。"},
    "grad-disabled.fix.decorator": {
        "en": "Run the training forward with grad enabled: the function decorated with `@torch.{mode}()`{place} is on "
              "the training path; remove the decorator, or keep it on a separate evaluation-only function and call "
              "an undecorated one for training.",
        "zh": "训练时的前向传播必须启用梯度：{place}用 `@torch.{mode}()` 装饰的函数处在训练路径上；去掉这个装饰器，"
              "或只把它留在单独的评估函数上，训练时调用不带装饰器的函数。"},
    "detached": {
        "en": "{what} in {regions} ran with grad enabled, but the path to the loss is cut by {detail}{at}; no "
              "gradient came back.",
        "zh": "{regions} 中的 {what} 在启用梯度时运行，但通往损失的路径被 {detail}{at} 切断，没有梯度传回。"},
    "detached.fix.detach": {"en": "Remove the `.detach()` there, so the gradient flows back into the {kind} layers.",
                            "zh": "删除该处的 `.detach()`，让梯度流回 {kind} 层。"},
    "detached.fix.data": {"en": "Use the tensor itself instead of its `.data` there.",
                          "zh": "在该处直接使用张量本身，不要用 `.data`。"},
    "detached.fix.numpy": {"en": "Keep the computation in torch: a NumPy round trip drops the autograd graph.",
                           "zh": "保持在 torch 中计算：转成 NumPy 再转回会丢失计算图。"},
    "detached.fix.tolist": {"en": "Keep the values as a tensor: `.tolist()` drops the autograd graph.",
                            "zh": "保持为张量：`.tolist()` 会丢失计算图。"},
    "detached.fix.graph-end": {"en": "Compute it with differentiable torch ops on the tensor itself there: that call returns a tensor without autograd history.",
                               "zh": "在该处用可微的 torch 运算直接作用于张量本身：那个调用返回的张量没有 autograd 历史。"},
    "detached.fix.item": {"en": "Keep the value as a tensor: `.item()` drops the autograd graph.",
                          "zh": "保持为张量：`.item()` 会丢失计算图。"},
    "checkpoint": {
        "en": "{what} in {regions} sit inside reentrant activation checkpointing whose inputs do not require grad "
              "({detail}): the block's output does not require grad, so backward never re-runs it and its {kind} "
              "parameters get no gradient.",
        "zh": "{regions} 中的 {what} 位于可重入激活检查点内，而其输入不需要梯度（{detail}）：该块的输出不需要梯度，"
              "反向传播不会重新运行它，其中的 {kind} 参数得不到梯度。"},
    "checkpoint.fix": {
        "en": "Call `model.enable_input_require_grads()` before training, or use non-reentrant checkpointing: "
              "`model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{'use_reentrant': False}})`.",
        "zh": "训练前调用 `model.enable_input_require_grads()`，或改用非可重入检查点："
              "`model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{'use_reentrant': False}})`。"},
    "bypassed.direct": {
        "en": "{what} in {regions} never ran: their base weight was used directly ({detail}){at}, around the {kind} "
              "wrapper.",
        "zh": "{regions} 中的 {what} 从未运行：其基础权重被直接使用（{detail}）{at}，绕过了 {kind} 包装层。"},
    "bypassed.direct.fix": {"en": "Call the module itself (`layer(x)`) instead of using its `.weight` directly.",
                            "zh": "直接调用该模块（`layer(x)`），不要直接使用它的 `.weight`。"},
    "bypassed.unused": {
        "en": "{what} in {regions} never ran: nothing of the model given to lora-trace ran in this step (not its forward, not any module inside it), so the step trained something else: a copy made before get_peft_model, the base model object, or another model.",
        "zh": "{regions} 中的 {what} 从未运行：交给 lora-trace 的模型在这一步中没有任何部分运行（既没有调用其 forward，也没有调用其中任何模块），所以这一步训练的是别的东西：在 get_peft_model 之前做的副本、基础模型对象，或另一个模型。"},
    "bypassed.unused.fix": {"en": "Run the step through the model that holds the adapter: `model = get_peft_model(base, config)` and call `model(...)` (not `base(...)`, not a copy), and pass that same model to lora-trace and to the optimizer.",
                            "zh": "让这一步经过持有适配器的模型：`model = get_peft_model(base, config)` 然后调用 `model(...)`（不是 `base(...)`，也不是副本），并把同一个模型交给 lora-trace 和优化器。"},
    "bypassed.compiled": {
        "en": "{what} in {regions} got no gradient in this step. The model is torch.compile'd: compiled code runs modules without their hooks, so whether the step went around these layers or cut the path after them is not seen here.",
        "zh": "{regions} 中的 {what} 在这一步中没有得到梯度。模型经过了 torch.compile：编译后的代码运行模块时不触发其钩子，因此这里看不到这一步是绕过了这些层，还是在它们之后切断了路径。"},
    "bypassed.compiled.fix": {"en": "Diagnose the uncompiled model: `lora_trace.diagnose(model, step)` on the module you passed to torch.compile (or `lora-trace run --deep` with compilation off) names the line that cuts the path or the path taken around the layers.",
                              "zh": "诊断未编译的模型：对传给 torch.compile 的那个模块运行 `lora_trace.diagnose(model, step)`（或在关闭编译的情况下运行 `lora-trace run --deep`），会指出切断路径的行，或绕过这些层的路径。"},
    "bypassed.unsure": {
        "en": "{what} never ran in this step, while the module around them ran ({parents}): either the model's own code chose not to call them (a branch for an input this batch lacks: healthy, they learn on the steps that run them), or code used their base weight directly around the {kind} wrapper (F.linear(x, layer.weight), layer.base_layer(x): a bypass). Default mode does not watch weight uses, so it cannot tell which.",
        "zh": "{what} 在这一步中从未运行，而包住它们的模块运行了（{parents}）：要么是模型自身的代码选择不调用它们（针对本批次缺少的某种输入的分支：正常，它们会在运行它们的步骤中学习），要么是代码绕过 {kind} 包装直接使用了其基础权重（F.linear(x, layer.weight)、layer.base_layer(x)：绕过）。默认模式不监视权重的使用，因此无法分辨。"},
    "bypassed.unsure.fix": {"en": "Let deep mode tell: `lora_trace.diagnose(model, step)` or `lora_trace.trace(model, deep=True)` names a direct weight use and its line, or reports the model's own skip as information; over a run, `diagnose(model, step, steps=8)` shows whether they learn on some steps.",
                            "zh": "让深度模式来判断：`lora_trace.diagnose(model, step)` 或 `lora_trace.trace(model, deep=True)` 会指出直接使用权重的位置和行号，或把模型自身的跳过报告为信息；在整个训练过程中，`diagnose(model, step, steps=8)` 可以显示它们是否在某些步骤中学习。"},
    "bypassed": {
        "en": "{what} in {regions} never ran in this step, so their trainable {kind} parameters got no gradient. The step went "
              "through {traversed}.",
        "zh": "{regions} 中的 {what} 在这一步中从未运行，其可训练的 {kind} 参数因此没有梯度。这一步经过的是：{traversed}。"},
    "bypassed.fix": {"en": "Encode through the part of the model that holds the {kind} layers (the path the adapter was meant "
                           "for)",
                     "zh": "让编码经过持有 {kind} 层的那部分模型（适配器本来要训练的路径）"},
    "bypassed.fix.regex": {
        "en": ", or put LoRA on the layers this step runs: in {model}, LoraConfig(target_modules=r\"{regex}\"); "
              "lora-trace checked with PEFT's matching that it selects exactly the linear layers the traced step ran "
              "there",
        "zh": "，或把 LoRA 放到这一步实际运行的层上：在 {model} 中使用 LoraConfig(target_modules=r\"{regex}\")；"
              "lora-trace 已用 PEFT 自己的匹配规则验证，它恰好选中这一步运行过的线性层"},
    "bypassed.fix.deep": {"en": "; lora_trace.diagnose() proposes a target_modules value checked against this model",
                          "zh": "；lora_trace.diagnose() 会给出针对该模型验证过的 target_modules"},
    "off-path": {
        "en": "{what} in {regions} ran with grad enabled, but their output never reaches the loss, so they got no "
              "gradient.",
        "zh": "{regions} 中的 {what} 在启用梯度时运行，但其输出从未到达损失，因此没有梯度。"},
    "off-path.deep": {"en": " Re-run with trace(..., deep=True), lora_trace.diagnose() or `lora-trace run --deep` to find a detaching line.",
                      "zh": " 用 trace(..., deep=True)、lora_trace.diagnose() 或 `lora-trace run --deep` 重新运行，可找到切断梯度的代码行。"},
    "off-path.none": {"en": " Deep mode saw no call between them and the loss that cuts a path, so lora-trace names no line: the output is unused by the loss, or it left torch where lora-trace cannot see (another library, a collective).",
                      "zh": " 深度模式在这些层与损失之间没有看到切断路径的调用，因此 lora-trace 无法指出代码行：要么损失没有使用其输出，要么输出在 lora-trace 看不到的地方离开了 torch（其他库、集合通信）。"},
    "off-path.fix": {"en": "No verified fix. If this output is meant to feed the loss, follow it from these layers to the loss (`lora-trace render` draws the regions it reached) and find where it leaves torch; if it is not, take LoRA off these layers.",
                     "zh": "没有经过验证的修复。如果该输出本应参与损失，请从这些层沿着它追到损失（`lora-trace render` 会画出它经过的区域），找出它离开 torch 的位置；如果不应参与，就把 LoRA 从这些层上去掉。"},
    "adapter-missing": {"en": "No PEFT LoRA layer in the model: LoRA was never applied, or merge_and_unload() "
                              "removed it.",
                        "zh": "模型中没有任何 PEFT LoRA 层：LoRA 从未被应用，或已被 merge_and_unload() 移除。"},
    "adapter-missing.fix": {"en": "Wrap the model with `peft.get_peft_model(model, LoraConfig(...))` before building "
                                  "the optimizer.",
                            "zh": "在创建优化器之前用 `peft.get_peft_model(model, LoraConfig(...))` 包装模型。"},
    "no-lora-params": {"en": "A PEFT config is present but the model holds no LoRA layer, so there is nothing to "
                             "train.",
                       "zh": "存在 PEFT 配置，但模型中没有任何 LoRA 层，没有可训练的内容。"},
    "no-lora-params.unloaded": {"en": "A PEFT config is present and its target_modules select modules of this model, but none of them is a LoRA layer any more: the adapter layers were taken out (merge_and_unload() or unload() replaces them with plain modules in place), so there is nothing to train.",
                                "zh": "存在 PEFT 配置，且其 target_modules 能选中本模型中的模块，但这些模块都已不是 LoRA 层：适配器层被移除了（merge_and_unload() 或 unload() 会就地把它们替换为普通模块），因此没有可训练的内容。"},
    "no-lora-params.unloaded.fix": {"en": "Merge only for export, on a copy, after training: `merged = copy.deepcopy(model).merge_and_unload()`; to evaluate merged weights mid-run, use `model.merge_adapter()` then `model.unmerge_adapter()`. To go on training this model, apply get_peft_model again and build a new optimizer over its trainable parameters.",
                                    "zh": "只在训练结束后、在副本上为导出而合并：`merged = copy.deepcopy(model).merge_and_unload()`；若要在训练中途评估合并后的权重，使用 `model.merge_adapter()` 再 `model.unmerge_adapter()`。若要继续训练这个模型，请重新调用 get_peft_model，并用其可训练参数创建新的优化器。"},
    "no-lora-params.fix": {"en": "Check target_modules against the model's module names (`lora-trace targets`).",
                           "zh": "对照模型的模块名检查 target_modules（`lora-trace targets`）。"},
    "adapter-inactive": {"en": "{layers} {kind} layers in {regions} add no {kind} delta for adapter {adapters}: when they ran, the adapter was {reasons}.",
                         "zh": "{regions} 中的 {layers} 个 {kind} 层没有为适配器 {adapters} 加上 {kind} 增量：这些层运行时，适配器{reasons}。"},
    "adapter-inactive.changed": {"en": " The step itself changed the adapter state{at}.",
                                 "zh": " 是这一步本身改变了适配器状态{at}。"},
    "skipped-by-model": {
        "en": {"one": "{count} of {total} adapter layers was skipped by the model itself this step: {enclosing} ran "
                      "without calling {skipped}. That is the model's own control flow (routing, layer drop, a "
                      "batch without that input), not a cut: the layer learns on the steps that run it.",
               "other": "{count} of {total} adapter layers were skipped by the model itself this step: {enclosing} "
                        "ran without calling {skipped}. That is the model's own control flow (routing, layer drop, "
                        "a batch without that input), not a cut: these layers learn on the steps that run them."},
        "zh": "本步中 {total} 个适配器层里有 {count} 个被模型自身跳过：{enclosing} 运行了，但 {skipped} 没有被调用。"
              "这是模型自己的控制流（路由、层丢弃、批次中缺少该输入），不是梯度被切断：这些层会在运行它们的步骤中学习。"},
    "skipped-by-model.default-mode": {
        "en": " The default mode does not watch weight uses: code that used these layers' base weights directly "
              "would look the same. lora_trace.diagnose() or trace(..., deep=True) tells the two apart.",
        "zh": " 默认模式不监视权重的使用：直接使用这些层基础权重的代码看起来也会一样。"
              "lora_trace.diagnose() 或 trace(..., deep=True) 可以区分两者。"},
    "skipped-by-model.fix": {
        "en": "Nothing to fix for one step. To check that every adapter learns over a run, judge several steps: "
              "`lora_trace.diagnose(model, step, steps=8)`.",
        "zh": "单步无需修复。若要确认每个适配器在整个训练中都能学习，请跨多个步骤判断："
              "`lora_trace.diagnose(model, step, steps=8)`。"},
    "skipped-by-model.fix.steps": {"en": "Nothing to fix.", "zh": "无需修复。"},
    "skipped.steps": {
        "en": {"one": "{count} adapter layer was skipped by the model on some of the {steps} steps and got a gradient "
                      "on others: the model's own control flow, and it learns.",
               "other": "{count} adapter layers were skipped by the model on some of the {steps} steps and got a "
                        "gradient on others: the model's own control flow, and they learn."},
        "zh": "{count} 个适配器层在 {steps} 步中的部分步骤被模型跳过，在其他步骤得到了梯度：这是模型自己的控制流，它们在学习。"},
    "never-ran.routed": {
        "en": "{layers} adapter layers ({params} trainable parameters) got no gradient in any of {steps} steps: the "
              "model never ran {skipped}, while {siblings} beside it ran. The model's routing or layer drop never "
              "selects it: a collapsed router (one expert never wins), or a drop rate that always drops it.",
        "zh": "{layers} 个适配器层（{params} 个可训练参数）在 {steps} 步中都没有得到梯度：模型从未运行 {skipped}，"
              "而与它并列的 {siblings} 运行了。模型的路由或层丢弃从不选中它：路由器塌缩（某个专家从不胜出），或丢弃率总是丢弃它。"},
    "never-ran.routed.fix": {
        "en": "Check the router (its logits or bias for this expert, an auxiliary load-balancing loss) or the layer "
              "drop rate (`layerdrop` / `encoder_layerdrop` must be below 1.0); or take the adapter off modules the "
              "model never runs.",
        "zh": "检查路由器（该专家的 logits 或偏置、辅助负载均衡损失）或层丢弃率（`layerdrop` / `encoder_layerdrop` 必须小于 "
              "1.0）；或者不要把适配器放在模型从不运行的模块上。"},
    "never-ran.dropped": {
        "en": "{layers} adapter layers ({params} trainable parameters) got no gradient in any of {steps} steps: "
              "{enclosing} ran every time without calling any of {skipped}, modules of one kind it picks from. Its "
              "routing or layer drop never selects them: a drop rate of 1.0, or a router that sends every token "
              "elsewhere.",
        "zh": "{layers} 个适配器层（{params} 个可训练参数）在 {steps} 步中都没有得到梯度：{enclosing} 每次运行都没有调用 "
              "{skipped} 中的任何一个（它从中挑选的同类模块）。它的路由或层丢弃从不选中它们：丢弃率为 1.0，或路由器把所有 token 送往别处。"},
    "never-ran.dropped.fix": {
        "en": "Check the layer drop rate (`layerdrop` / `encoder_layerdrop` must be below 1.0) or the router; or take "
              "the adapter off modules the model never runs.",
        "zh": "检查层丢弃率（`layerdrop` / `encoder_layerdrop` 必须小于 1.0）或路由器；或者不要把适配器放在模型从不运行的模块上。"},
    "never-ran.absent": {
        "en": "{layers} adapter layers ({params} trainable parameters) got no gradient in any of {steps} steps: "
              "{enclosing} ran every time without calling {skipped}. The batches never hold what it needs (an input "
              "of that modality dropped by the collator or the processor), or a setting turns it off.",
        "zh": "{layers} 个适配器层（{params} 个可训练参数）在 {steps} 步中都没有得到梯度：{enclosing} 每次运行都没有调用 "
              "{skipped}。批次中从未包含它需要的输入（该模态的输入被 collator 或 processor 丢弃），或某个设置关闭了它。"},
    "never-ran.absent.fix": {
        "en": "Check that the batches carry that input (print the batch keys the model gets: e.g. `input_features` "
              "for an audio tower); or take the adapter off a part this training never uses.",
        "zh": "检查批次是否带有该输入（打印传给模型的批次键，例如音频塔需要的 `input_features`）；"
              "或者不要把适配器放在本次训练从不使用的部分上。"},
    "base-trainable": {
        "en": {"one": "{count} parameter of the adapted model ({values} values) requires grad beside the adapters "
                      "({examples}): the base model trains too, with a full fine-tune's memory and changed base "
                      "weights.",
               "other": "{count} parameters of the adapted model ({values} values) require grad beside the adapters "
                        "({examples}): the base model trains too, with a full fine-tune's memory and changed base "
                        "weights."},
        "zh": "被适配的模型中有 {count} 个参数（{values} 个数值）在适配器之外也需要梯度（{examples}）：基础模型也在训练，"
              "占用全量微调的显存，并会改变基础权重。"},
    "base-trainable.fix": {
        "en": "If only the adapters should train: apply get_peft_model last (it freezes the base; a blanket "
              "`requires_grad_(True)` or prepare_model_for_kbit_training after it unfreezes it), and list what "
              "should train beside them in `modules_to_save`. `model.print_trainable_parameters()` shows the split.",
        "zh": "如果只应训练适配器：最后调用 get_peft_model（它会冻结基础模型；在其后调用 `requires_grad_(True)` 或 "
              "prepare_model_for_kbit_training 会解冻），并把需要一起训练的模块写进 `modules_to_save`。"
              "`model.print_trainable_parameters()` 会显示可训练参数的分布。"},
    "frozen-in-optimizer": {
        "en": {"one": "{count} frozen parameter (requires_grad=False) is registered with the optimizer: it never "
                      "gets a gradient, so it is never updated.",
               "other": "{count} frozen parameters (requires_grad=False) are registered with the optimizer: they "
                        "never get a gradient, so they are never updated."},
        "zh": "优化器中登记了 {count} 个冻结参数（requires_grad=False）：它们永远得不到梯度，因此永远不会被更新。"},
    "frozen-in-optimizer.fix": {
        "en": "Harmless. To keep the optimizer to what trains, build it from "
              "`[p for p in model.parameters() if p.requires_grad]`.",
        "zh": "无害。若要让优化器只包含需要训练的参数，请用 `[p for p in model.parameters() if p.requires_grad]` 创建它。"},
    "origin.zero": {
        "en": " The gradient became exactly zero at `{op}`{at}: the gradient reaching that op was non-zero, and what "
              "it passed back towards the adapters was all zero.",
        "zh": " 梯度在 `{op}`{at}变为全零：到达该运算的梯度不为零，而它传回适配器方向的梯度全为零。"},
    "origin.nonfinite": {
        "en": " The gradient became NaN/Inf at `{op}`{at}: the gradient reaching that op was finite, and what it "
              "passed back towards the adapters was not.",
        "zh": " 梯度在 `{op}`{at}变为 NaN/Inf：到达该运算的梯度是有限的，而它传回适配器方向的梯度不是。"},
    "origin.forward-nonfinite": {
        "en": " The forward pass already produced NaN/Inf at `{op}`{at}, from finite inputs.",
        "zh": " 前向传播在 `{op}`{at}就已经由有限的输入产生了 NaN/Inf。"},
    "tuner-unsupported": {
        "en": {"one": "{tuners} adapters found ({count} layer): lora-trace does not yet reason about their "
                      "gradients, so only the configuration checks apply to them.",
               "other": "{tuners} adapters found ({count} layers): lora-trace does not yet reason about their "
                        "gradients, so only the configuration checks apply to them."},
        "zh": "发现 {tuners} 适配器（{count} 个层）：lora-trace 尚不能分析它们的梯度，因此只对它们做配置检查。"},
    "tuner-unsupported.fix": {
        "en": "Nothing to fix in the model. To check that these adapters learn, compare their parameters before and "
              "after a few optimizer steps.",
        "zh": "模型本身无需修改。若要确认这些适配器在学习，请比较几次优化器更新前后的参数。"},
    "frozen-reference": {"en": "{layers} frozen {kind} layers in {regions} ran only with grad disabled and hold nothing the optimizer updates: a reference copy (a DPO/KL reference, an EMA teacher), not a failure.",
                         "zh": "{regions} 中的 {layers} 个冻结的 {kind} 层只在禁用梯度时运行，且不含优化器更新的参数：这是一个参考模型副本（DPO/KL 参考模型、EMA 教师），不是故障。"},
    "frozen-reference.adapter": {"en": "The frozen adapter(s) {adapters} on {layers} {kind} layers in {regions} added their delta only while grad was disabled and hold nothing the optimizer updates: a reference the step switches to (a DPO/KL reference pass), not an adapter meant to train.",
                                 "zh": "{regions} 中 {layers} 个 {kind} 层上被冻结的适配器 {adapters} 只在禁用梯度时生效，且不含优化器更新的参数：这是步骤中切换使用的参考适配器（DPO/KL 参考前向），而不是要训练的适配器。"},
    "frozen-reference.fix": {"en": "Nothing to fix.", "zh": "无需修复。"},
    "reason.disabled": {"en": "disabled", "zh": "已被禁用"},
    "reason.merged": {"en": "merged into the base weights", "zh": "已合并进基础权重"},
    "reason.idle": {"en": "not the active adapter ({idle} trainable; active: {active})",
                    "zh": "不是激活的适配器（可训练：{idle}；激活：{active}）"},
    "reason.scaled": {"en": "scaled to zero", "zh": "缩放系数为零"},
    "fix.disabled": {"en": "re-enable the adapter layers (`model.enable_adapter_layers()`, or leave the "
                           "`with model.disable_adapter():` block before training)",
                     "zh": "重新启用适配器层（`model.enable_adapter_layers()`，或在训练前退出 "
                           "`with model.disable_adapter():`）"},
    "fix.merged": {"en": "unmerge before training (`model.unmerge_adapter()`)",
                   "zh": "训练前取消合并（`model.unmerge_adapter()`）"},
    "fix.idle": {"en": "activate the adapter you train (`model.set_adapter(name)`), or freeze the ones you do not",
                 "zh": "激活要训练的适配器（`model.set_adapter(name)`），或冻结不训练的适配器"},
    "fix.scaled": {"en": "restore the scale (`lora_alpha` > 0, or undo `scale_layer(0)`)",
                   "zh": "恢复缩放系数（`lora_alpha` > 0，或撤销 `scale_layer(0)`）"},
    "lora-frozen": {"en": "{params} {kind} parameters of the active adapter in {regions} have requires_grad=False, so "
                          "they cannot learn.",
                    "zh": "{regions} 中激活适配器的 {params} 个 {kind} 参数 requires_grad=False，无法学习。"},
    "lora-frozen.fix": {"en": "Re-enable them after any freezing: `lora_trace.fixes.enable_lora_gradients(model)`; "
                              "load adapters with `PeftModel.from_pretrained(..., is_trainable=True)`.",
                        "zh": "在所有冻结操作之后重新启用：`lora_trace.fixes.enable_lora_gradients(model)`；"
                              "加载适配器时使用 `PeftModel.from_pretrained(..., is_trainable=True)`。"},
    "eval-mode": {"en": "{modules} in eval mode during the traced step: whatever acts differently in training (dropout, "
                        "LoRA dropout, batch norm) acts as in evaluation. Not a cut by itself.",
                  "zh": "{modules} 在被追踪的训练步中处于 eval 模式：训练时行为不同的部分（dropout、LoRA dropout、batch norm）"
                        "按评估方式运行。这本身不会切断梯度。"},
    "eval-mode.fix": {"en": "Call `model.train()` before the training step.", "zh": "在训练步之前调用 `model.train()`。"},
    "target-unmatched": {
        "en": {"one": "{count} target_modules entry of adapter '{adapter}' in {model} matched no module ({table}).",
               "other": "{count} target_modules entries of adapter '{adapter}' in {model} matched no module ({table})."},
        "zh": "{model} 中适配器 '{adapter}' 的 {count} 个 target_modules 条目没有匹配到任何模块（{table}）。"},
    "target-unmatched.all": {"en": " Nothing matched at all.", "zh": " 完全没有匹配。"},
    "target-unmatched.some": {"en": " PEFT silently ignores them beside valid ones.",
                              "zh": " 与有效条目并存时，PEFT 会静默忽略它们。"},
    "target-unmatched.glob": {"en": " {entry}: list entries match exact module names or name suffixes after a '.'; "
                                    "'*' is no wildcard there and a list entry is no regex.",
                              "zh": " {entry}：列表条目只匹配完整模块名或以 '.' 分隔的名称后缀；其中的 '*' 不是通配符，"
                                    "列表条目也不是正则表达式。"},
    "target-unmatched.fix": {"en": "Use PEFT's forms: a list of exact names or name suffixes (`q_proj`), or one regex "
                                   "string that is fullmatched against the whole module name",
                             "zh": "使用 PEFT 支持的写法：由完整名称或名称后缀组成的列表（`q_proj`），或一个与完整模块名"
                                   "整体匹配（fullmatch）的正则字符串"},
    "target-unmatched.fix.regex": {
        "en": ". This regex keeps your other entries and does what the pattern meant; lora-trace checked it with "
              "PEFT's matching: target_modules=r\"{regex}\".",
        "zh": "。下面的正则保留其他条目，并实现该模式的本意；lora-trace 已用 PEFT 的匹配规则验证："
              "target_modules=r\"{regex}\"。"},
    "target-unmatched.fix.cli": {"en": "; `lora-trace targets` shows what each entry matches.",
                                 "zh": "；`lora-trace targets` 可显示每个条目匹配到的模块。"},
    "loss-no-grad": {"en": "The loss has no grad_fn: nothing it was computed from requires grad, so backward cannot "
                           "reach any {kind} parameter.",
                     "zh": "损失没有 grad_fn：计算它的输入都不需要梯度，反向传播到达不了任何 {kind} 参数。"},
    "loss-no-grad.fix": {"en": "Find where the loss's inputs lose their graph (no_grad, detach, frozen parameters); "
                               "lora_trace.diagnose() names the line.",
                         "zh": "找出损失的输入在哪里丢失了计算图（no_grad、detach、冻结的参数）；"
                               "lora_trace.diagnose() 会指出具体代码行。"},
    "folded-loss": {"en": " As a consequence the loss has no grad_fn.", "zh": " 因此损失没有 grad_fn。"},
    "nonfinite-grad": {"en": "{params} {kind} parameters got NaN/Inf gradients ({modules}).",
                       "zh": "{params} 个 {kind} 参数得到了 NaN/Inf 梯度（{modules}）。"},
    "nonfinite-grad.fix": {"en": "Lower the learning rate, check the loss for log(0) or division by zero, or use a "
                                 "GradScaler.",
                           "zh": "降低学习率，检查损失中是否有 log(0) 或除以零，或使用 GradScaler。"},
    "not-in-optimizer": {"en": "{params} trainable {kind} parameters are in no optimizer param group: they get "
                               "gradients but nothing updates them (an optimizer built before get_peft_model?).",
                         "zh": "{params} 个可训练的 {kind} 参数不在任何优化器参数组中：它们有梯度但不会被更新"
                               "（优化器是否在 get_peft_model 之前创建？）。"},
    "not-in-optimizer.partial": {"en": "{params} of {total} trainable {kind} parameters ({roles}) are in no optimizer param group while the others are: they get gradients but nothing updates them. The optimizer's parameter list was filtered (by name or role), or built before some of them were added or unfrozen.",
                                 "zh": "{total} 个可训练的 {kind} 参数中有 {params} 个（{roles}）不在任何优化器参数组中，而其余的在：它们有梯度但不会被更新。优化器的参数列表被过滤过（按名称或角色），或在其中一些参数被添加或解冻之前就已创建。"},
    "not-in-optimizer.fix.partial": {"en": "Give the optimizer every trainable parameter, after the last change to the adapters: `optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=...)`; for separate rates (LoRA+), put each role in its own param group rather than leaving one out.",
                                     "zh": "在最后一次修改适配器之后，把所有可训练参数交给优化器：`optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=...)`；如需不同学习率（LoRA+），请把每种角色放进各自的参数组，而不是漏掉其中一种。"},
    "not-in-optimizer.fix": {"en": "Build the optimizer after get_peft_model: `optimizer = torch.optim.AdamW([p for p "
                                   "in model.parameters() if p.requires_grad], lr=...)`.",
                             "zh": "在 get_peft_model 之后创建优化器：`optimizer = torch.optim.AdamW([p for p in "
                                   "model.parameters() if p.requires_grad], lr=...)`。"},
    "grad-zero": {"en": "{params} trainable {kind} parameters in {regions} got a gradient that is exactly zero although the other factor of their adapter is not all zero, so this is not the normal first step (where only the factor beside an all-zero one gets zeros): {why}. The adapter learns nothing from this batch.",
                  "zh": "{regions} 中的 {params} 个可训练 {kind} 参数得到的梯度恰好为零，而其适配器的另一个因子并非全零，所以这不是正常的第一步（那时只有全零因子旁边的因子得到零梯度）：{why}。适配器从这个批次中学不到任何东西。"},
    "why.zero.dropout": {"en": "LoRA dropout is {p}, so in training mode every input of the LoRA branch is dropped",
                         "zh": "LoRA dropout 为 {p}，训练模式下 LoRA 分支的所有输入都被丢弃"},
    "why.zero.alora": {"en": "activated LoRA (alora_invocation_tokens) found no invocation sequence in the batch, so the adapter was masked off for every row",
                       "zh": "激活式 LoRA（alora_invocation_tokens）在批次中找不到调用序列，因此适配器对每一行都被屏蔽"},
    "why.zero.masked": {"en": "the {kind} output was multiplied by zero on its way to the loss (a mask that is all zero for this batch, a zero weight)",
                        "zh": "{kind} 的输出在通往损失的路上被乘以零（对这个批次全为零的掩码、为零的权重）"},
    "grad-zero.fix.dropout": {"en": "Set lora_dropout below 1 (typically 0.05-0.1).", "zh": "把 lora_dropout 设为小于 1 的值（通常 0.05-0.1）。"},
    "grad-zero.fix.alora": {"en": "Put the invocation sequence into every training example (it must appear token for token, as the tokenizer produces it), or train a plain LoRA.",
                            "zh": "在每个训练样本中加入调用序列（必须与分词器产生的 token 完全一致），或改用普通 LoRA。"},
    "grad-zero.fix.masked": {"en": "Find the zero factor between the {kind} layers and the loss: check the masks (attention / padding masks inverted, all-zero for this batch) and the loss weights (in GRPO/RLOO the advantages are all zero when every completion of a group gets the same reward: check the reward functions); lora_trace.diagnose() follows the path where it can.",
                             "zh": "找出 {kind} 层与损失之间的零因子：检查掩码（注意力/填充掩码是否取反、对该批次是否全零）和损失权重（GRPO/RLOO 中若一组内每个补全得到相同奖励，优势值全为零：请检查奖励函数）；lora_trace.diagnose() 会尽可能追踪该路径。"},
    "zero-grad-at-init": {"en": "{layers} {kind} layers have exactly-zero {waiting} gradients because {zero} is still "
                                "all zero; {zero} got a gradient, so {waiting} will after the first update. This is "
                                "normal at initialisation.",
                          "zh": "{layers} 个 {kind} 层的 {waiting} 梯度恰好为零，因为 {zero} 仍全为零；{zero} 已得到梯度，"
                                "第一次更新后 {waiting} 也会有梯度。这在初始化时是正常的。"},
    "note.no-loss": {"en": "no loss was seen: call backward() inside the block, return the loss from the model, or pass it with t.diagnose(loss=...)",
                     "zh": "没有观察到损失：请在代码块内调用 backward()、让模型返回损失，或用 t.diagnose(loss=...) 传入损失"},
    "note.meta": {"en": "gradient norms do not exist on the meta device: only which parameters a gradient reaches",
                  "zh": "meta 设备上没有梯度数值：只能判断梯度到达了哪些参数"},
    "note.default-mode": {"en": "default mode: detaching calls are not watched; lora_trace.diagnose(), trace(deep=True) or `lora-trace run --deep` finds the line that cuts a path",
                          "zh": "默认模式不监视切断计算图的调用；lora_trace.diagnose()、trace(deep=True) 或 `lora-trace run --deep` 能找到切断路径的代码行"},
    "note.compiled": {"en": "the model is torch.compile'd: it was traced through its original module; the hooks made dynamo recompile it, and what dynamo fuses is seen only at module boundaries",
                      "zh": "模型经过 torch.compile：追踪的是其原始模块；钩子会让 dynamo 重新编译，被 dynamo 融合的部分只能在模块边界处观察"},
    "zero-grad-at-init.fix": {"en": "Nothing to fix.", "zh": "无需修复。"},
    "no-supervised-tokens": {"en": "Every label in the batch equals the ignore index -100: no token is supervised, "
                                   "so the loss is {loss} and the gradients carry nothing.",
                             "zh": "该批次的所有标签都等于忽略索引 -100：没有任何 token 被监督，损失为 {loss}，梯度不携带信息。"},
    "no-supervised-tokens.fix": {"en": "Check the collator / label masking: prompt masking that also masks the "
                                       "answer, truncation that cuts every answer, or padding labelled -100 everywhere.",
                                 "zh": "检查数据整理器和标签掩码：提示掩码是否把答案也掩掉了、截断是否截掉了所有答案、"
                                       "或所有位置都被标为 -100。"},
}
