"""Capture: everything that touches torch and PEFT. Finds the adapters in a model, installs the hooks of a
traced step (the only place hooks are installed), watches the calls that cut a path, walks the autograd
graph, runs the dry run, and hands analysis one typed recording turned into a frozen `Trace`.
May import: `lora_trace.core`, torch, PEFT, transformers. Reads analysis only lazily (`Tracer.diagnosis`).
"""
