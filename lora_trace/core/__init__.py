"""The core: records of a traced step, findings and the Diagnosis, regions, the message catalogue, JSON and
errors. Standard library only (no torch, no networkx), so a run saved on a GPU box loads, diffs and renders
anywhere. May import: nothing outside `lora_trace.core`. Convenience methods on `Diagnosis` import higher
layers lazily, inside the method.
"""
