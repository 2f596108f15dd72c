"""Building the trace: gradient norms read with one synchronisation, whatever devices they sit on."""

import torch
from torch.overrides import TorchFunctionMode

from lora_trace.capture.build import read_scalars


def test_scalars_are_read_together_and_meta_or_missing_ones_stay_unknown():
    assert read_scalars([torch.tensor(1.0), torch.tensor(0.0)]) == [1.0, 0.0]
    mixed = [torch.tensor(1.0), torch.tensor(2.0, device="meta"), torch.tensor(3.0, dtype=torch.float64), None,
             torch.tensor(True)]
    assert read_scalars(mixed) == [1.0, None, 3.0, None, 1.0]


class _Reads(TorchFunctionMode):
    """Counts the calls that bring a tensor's value to the host: each one a device synchronisation on a GPU."""

    READS = {torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.cpu}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


def test_a_traced_step_reads_values_to_the_host_once_however_many_model_calls_it_makes():
    """Gradient norms, loss values and the label check stay on the device until the block ends: the reads do
    not grow with micro-steps (no synchronisation in a forward or backward hook)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import lora_trace

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                init_lora_weights=False))
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    reads = []
    for calls in (1, 3):
        model.zero_grad(set_to_none=True)
        with _Reads() as counted, lora_trace.trace(model) as tracer:
            for _ in range(calls):
                model(input_ids=ids, labels=ids).loss.backward()
        reads.append(counted.count)
        assert tracer.trace.losses[0].value > 0 and tracer.trace.labels_all_ignored is False
    assert reads[0] == reads[1] <= 1, reads


def _fresh_lora():
    from peft import LoraConfig, get_peft_model

    from .conftest import TwoLayers

    torch.manual_seed(0)
    return get_peft_model(TwoLayers(), LoraConfig(r=2, target_modules=["encoder", "decoder"]))  # lora_B zero


def _zeros(trace):
    return {p.name: p.all_zero for site in trace.sites for p in site.params}


def test_all_zero_is_read_only_beside_a_gradient_that_arrived_zero_and_from_the_start_values():
    """lora_B starts at zero, so lora_A's first gradient is exactly zero: only then is all-zero asked, and it is
    the value before the step's update (the optimizer's start copy), so the first step is normal."""
    import lora_trace

    model = _fresh_lora()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.randn(4, 8)
    with lora_trace.trace(model, optimizer=optimizer) as first:
        model(x).backward()
        optimizer.step()  # lora_B moves: its start value is the evidence
    zeros = _zeros(first.trace)
    assert {n for n, z in zeros.items() if z} == {n for n in zeros if ".lora_B." in n}
    assert first.diagnosis.codes("info") == ("zero-grad-at-init",) and first.diagnosis.ok
    optimizer.zero_grad()
    with lora_trace.trace(model, optimizer=optimizer) as second:  # every gradient non-zero: nothing asked
        model(x).backward()
    assert set(_zeros(second.trace).values()) == {None} and second.diagnosis.ok


def test_a_start_value_written_in_place_since_is_unknown_never_a_false_grad_zero():
    """No optimizer given, but the step updates lora_B in place: its start value is gone, so all-zero stays
    unknown and lora_A's zero gradient is no error."""
    import lora_trace

    model = _fresh_lora()
    with lora_trace.trace(model) as tracer:
        model(torch.randn(4, 8)).backward()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".lora_B." in name:
                    param.add_(1.0)
    assert all(z is None for n, z in _zeros(tracer.trace).items() if ".lora_B." in n)
    assert tracer.diagnosis.codes("error") == ()


def test_filled_records_are_reused_between_traces_while_state_and_answers_are_the_same():
    import lora_trace

    model = _fresh_lora()
    x = torch.randn(4, 8)
    traces = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        with lora_trace.trace(model) as tracer:
            model(x).backward()
        traces.append(tracer.trace)
    assert any(p.all_zero for site in traces[0].sites for p in site.params)  # lora_B, still zero
    assert all(a is b for a, b in zip(traces[0].sites, traces[1].sites, strict=True))



def test_values_that_moved_are_the_same_whether_compared_at_once_or_as_flags_read_together():
    from lora_trace.capture.build import moved

    start = torch.tensor([1.0, float("nan")])
    pairs = {"same": (torch.ones(3), torch.ones(3)), "moved": (torch.ones(3), torch.tensor([1.0, 2.0, 1.0])),
             "nan": (start, start.clone()), "reshaped": (torch.ones(2, 2), torch.ones(4))}
    assert moved(pairs) == ("moved", "nan", "reshaped")
    with _Reads() as reads:  # the device path: one read for all, not one per parameter
        assert moved(pairs, on_host=lambda tensor: False) == ("moved", "nan", "reshaped")
    assert reads.count == 1
