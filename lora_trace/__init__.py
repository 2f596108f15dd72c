"""lora-trace: find out why a LoRA adapter does not learn, from one traced training step."""

__version__ = "0.1.0"

__all__ = ["__version__"]
