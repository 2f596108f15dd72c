"""Region calls: each region's entries, nesting and producers, from the hooks on its root modules."""

import torch

from lora_trace.capture.regionflow import RegionFlow


def test_a_region_entered_again_inside_itself_is_one_call_and_still_the_parent_of_what_runs_inside():
    flow, module, x = RegionFlow(), torch.nn.Identity(), torch.ones(2, requires_grad=True) * 2
    flow.pre_hook("tower")(module, (x,), {})
    flow.pre_hook("tower")(module, (x,), {})  # a PEFT tuner, then the model it wraps: both are hooked
    flow.pre_hook("tower.head")(module, (x,), {})
    flow.post_hook("tower.head")(module, (x,), {}, x * 3)
    flow.post_hook("tower")(module, (x,), {}, x * 4)
    flow.post_hook("tower")(module, (x,), {}, x * 5)
    calls, _ = flow.records([])
    assert [(c.region, c.parent) for c in calls] == [("tower", None), ("tower.head", 0)]
    assert flow.regions_in_order() == ("tower", "tower.head")
