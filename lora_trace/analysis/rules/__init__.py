"""The rules: one module per family of causes, each turning `Facts` into `Finding`s (keys and values; the
catalogue owns the words). Torch-free. May import: `lora_trace.core`, `lora_trace.analysis.facts`.
"""
