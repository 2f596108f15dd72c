"""Presentation: the text report (en/zh), the encoding-path graph (networkx), DOT and images through
graphviz, the HTML page, the printed comparison. Torch-free: works on loaded runs.
May import: `lora_trace.core`, `lora_trace.analysis`, networkx, graphviz.
"""
