"""Source lines for grad-mode changes and detaching calls, on plain modules written in this file."""

import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lora_trace


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.encoder(x)).pow(2).mean()


def _model():
    torch.manual_seed(0)
    return get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["encoder.0", "encoder.2"]))


def _line_of(fragment):
    with open(__file__, encoding="utf-8") as handle:
        return next(i for i, text in enumerate(handle, 1) if fragment in text and "_line_of" not in text)


@torch.no_grad()
def encode_decorated(model, x):
    return model.base_model.model.encoder(x)


def test_a_decorated_function_is_pointed_at_by_its_decorator():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        return m.base_model.model.head(encode_decorated(m, x)).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "grad-disabled"
    assert finding.location.endswith(f"tests/capture/test_locate.py:{_line_of('@torch.no_grad()')}")


def test_grad_switched_off_by_a_call_names_that_call_and_never_a_no_grad_block():
    model = _model()
    model.base_model.model.head.requires_grad_(True)
    x = torch.randn(3, 4)

    def step(m):
        torch.set_grad_enabled(False)  # grad off by a call: stays off
        hidden = m.base_model.model.encoder(x)
        torch.set_grad_enabled(True)
        return m.base_model.model.head(hidden).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "grad-disabled" and finding.evidence["grad_off"] == "call"
    assert finding.location.endswith(f":{_line_of('torch.set_grad_enabled(False)  # grad off by a call')}")
    assert "set_grad_enabled(False)" in finding.message and "under torch.no_grad()" not in finding.message


def _switch_grad_off():
    torch.set_grad_enabled(False)


def test_grad_already_off_when_the_code_ran_says_so_at_the_call():
    model = _model()
    model.base_model.model.head.requires_grad_(True)
    x = torch.randn(3, 4)

    def step(m):
        _switch_grad_off()
        try:
            hidden = m.base_model.model.encoder(x)  # grad already off here
        finally:
            torch.set_grad_enabled(True)
        return m.base_model.model.head(hidden).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "grad-disabled" and finding.evidence["grad_off"] == "global"
    assert finding.location.endswith(f":{_line_of('# grad already off here')}")
    assert "turned off globally earlier" in finding.message and "under torch.no_grad()" not in finding.message


def test_a_grad_off_block_is_said_to_be_one():
    model = _model()
    model.base_model.model.head.requires_grad_(True)
    x = torch.randn(3, 4)

    def step(m):
        with torch.set_grad_enabled(False):
            hidden = m.base_model.model.encoder(x)
        return m.base_model.model.head(hidden).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.evidence["grad_off"] == "block" and "under torch.no_grad()" in finding.message
    assert finding.location.endswith(f":{_line_of('with torch.set_grad_enabled(False):')}")


def test_inference_mode_is_named_as_such():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        with torch.inference_mode():
            hidden = m.base_model.model.encoder(x)
        return m.base_model.model.head(hidden.clone()).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "grad-disabled" and "inference_mode" in finding.message
    assert finding.location.endswith(f":{_line_of('with torch.inference_mode():')}")


def test_a_numpy_round_trip_is_a_detached_path():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        hidden = m.base_model.model.encoder(x)
        hidden = torch.from_numpy(hidden.detach().numpy() * 1.0)
        return m.base_model.model.head(hidden).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "detached"
    assert finding.location.endswith(f":{_line_of('hidden.detach().numpy()')}")


def test_data_access_is_a_detached_path():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        hidden = m.base_model.model.encoder(x).data
        return m.base_model.model.head(hidden).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "detached" and "data" in finding.message
    assert finding.location.endswith(f":{_line_of('encoder(x).data')}")


def test_using_the_base_weight_directly_is_a_bypass_with_its_line():
    model = _model()
    x = torch.randn(3, 4)
    layer = model.base_model.model.encoder[0]

    def step(m):
        hidden = torch.nn.functional.linear(x, layer.weight, layer.bias)
        return m.base_model.model.head(m.base_model.model.encoder[2](hidden)).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "lora-bypassed"
    assert finding.modules == ("base_model.model.encoder.0",)
    assert finding.location.endswith(f":{_line_of('functional.linear(x, layer.weight')}")


def test_a_no_grad_block_after_the_lora_layers_is_grad_disabled_on_the_path():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        hidden = m.base_model.model.encoder(x)
        with torch.no_grad():
            pooled = hidden * 2
        return m.base_model.model.head(pooled).pow(2).mean()

    finding = lora_trace.diagnose(model, step).findings[0]
    assert finding.code == "grad-disabled" and "fed a path" in finding.message
    assert finding.location.endswith(f":{_line_of('        with torch.no_grad():')}")


def test_a_logging_item_call_on_a_healthy_path_is_not_a_cut():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        loss = m(x)
        print(f"loss {loss.item():.3f}")
        return loss

    diagnosis = lora_trace.diagnose(model, step)
    assert diagnosis.ok and diagnosis.codes("error") == ()


def test_a_branch_the_loss_ignores_is_off_path():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        m.base_model.model.encoder(x)  # computed, never used
        return m.base_model.model.head(x).pow(2).mean()

    assert lora_trace.diagnose(model, step).findings[0].code == "lora-off-path"


@pytest.mark.parametrize("rebuild", ["new_tensor", "as_tensor_of_a_copy"])
def test_an_op_that_returns_a_tensor_without_a_graph_is_located(rebuild):
    """No list of detaching calls decides it: any op whose input has a graph and whose float output has none."""
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        hidden = m.base_model.model.encoder(x)
        if rebuild == "new_tensor":
            hidden = hidden.new_tensor(hidden)  # the rebuilding line
        else:
            hidden = torch.as_tensor(hidden.clone(), dtype=torch.float64).float() * 1  # the rebuilding line
        return m.base_model.model.head(hidden).pow(2).mean()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's advice to use clone().detach()
        finding = lora_trace.diagnose(model, step).findings[0]
    if rebuild == "new_tensor":
        assert finding.code == "detached" and "new_tensor" in finding.message
        assert finding.location.endswith(f":{_line_of('hidden.new_tensor(hidden)  # the rebuilding line')}")
    else:  # as_tensor keeps the graph: nothing is cut, the head trains and the LoRA layer too
        assert finding.code != "detached"


def test_allocations_shaped_like_a_tensor_are_not_cuts():
    model = _model()
    x = torch.randn(3, 4)

    def step(m):
        hidden = m.base_model.model.encoder(x)
        noise = torch.zeros_like(hidden) + hidden.new_zeros(hidden.shape)
        return m.base_model.model.head(hidden + noise).pow(2).mean()

    diagnosis = lora_trace.diagnose(model, step)
    assert diagnosis.ok and not [c for c in diagnosis.trace.cuts if c.kind.value == "graph-end"]


def test_code_typed_in_ipython_is_the_users_and_the_stacks_own_libraries_are_not():
    """A classic IPython cell (`<ipython-input-N-...>`, source in linecache) is where the user's no_grad is;
    `kernels` (transformers' hub kernels wrap forward) and the training stacks are library frames."""
    import linecache

    import torch

    import lora_trace
    from lora_trace.capture.locate import is_library_file

    assert not is_library_file("<ipython-input-3-abc>") and is_library_file("<string>")  # <string>: generated
    assert is_library_file("<frozen importlib._bootstrap>")
    assert is_library_file("/x/site-packages/kernels/_internals/layer/layer.py")
    assert is_library_file("/x/site-packages/lightning/pytorch/loops/fit_loop.py")
    source = ("import torch\n"
              "def encode(model, ids):\n"
              "    with torch.no_grad():\n"
              "        return model(input_ids=ids).logits\n")
    name = "<ipython-input-7-0123>"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    space: dict = {}
    exec(compile(source, name, "exec"), space)
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(0, 64, (2, 8))
    diagnosis = lora_trace.diagnose(model, lambda m: space["encode"](m, ids).sum())
    assert diagnosis.root_cause.code == "grad-disabled" and diagnosis.root_cause.location == f"{name}:3"


@pytest.mark.parametrize(("reentrant", "through"), [(True, "backward"), (False, "backward"), (False, "autograd.grad")])
def test_a_checkpoint_recompute_is_told_from_the_first_forward(reentrant, through):
    """Recomputes run inside a backward node; the first forward, outside any, walks no stack."""
    from torch.utils.checkpoint import checkpoint

    from lora_trace.capture.locate import in_checkpoint_recompute

    seen = []

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 3)

        def forward(self, x):
            seen.append(in_checkpoint_recompute())
            return self.linear(x)

    block = Block()
    x = torch.randn(2, 3, requires_grad=True)
    loss = checkpoint(block, x, use_reentrant=reentrant).sum()
    if through == "backward":
        loss.backward()
    else:
        torch.autograd.grad(loss, [x])
    assert seen == [False, True]
