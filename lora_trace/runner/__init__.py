"""`lora-trace run -- python train.py ...`: diagnose the first optimizer steps of a script nobody changed.

launch.py runs the command with a bootstrap folder first on PYTHONPATH; its sitecustomize starts child.py in
every Python process the command starts (each torchrun rank included), which finds the steps through
PyTorch's global hooks (capture/autostep.py) and saves each step's run; launch.py then reads them back.
"""
