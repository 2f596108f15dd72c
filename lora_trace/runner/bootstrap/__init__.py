"""The folder `lora-trace run` puts first on PYTHONPATH: it holds only the sitecustomize that starts tracing."""
