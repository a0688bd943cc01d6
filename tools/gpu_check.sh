#!/usr/bin/env bash
# On a machine with a CUDA GPU, from the repository root, after `pip install -e ".[test]"`:
# the Triton kernels' tests on the device (they compare with the reference path there), then
# the GPU bench (torch's for-loop, foreach and fused against optimlab's Triton kernels, CUDA
# events, the copy bandwidth measured in the same run).  Prepared without a GPU; a few minutes.
set -euo pipefail
python -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), 'triton', triton.__version__)"
python -m pytest tests/test_triton.py -x -q -p no:cacheprovider
python -m optimlab bench --device cuda --layouts large,gpt2
python -m optimlab bench --device cuda --layouts large,gpt2 --optimizers Adam-bf16,Adam-8bit,AdamW-8bit
