"""Did a model's server die because the GPU ran out of memory? A pure look at its log tail.

The lines are llama.cpp's own (ggml-cuda.cu, ggml-alloc.c, llama-model.cpp), e.g.
``ggml_backend_cuda_buffer_type_alloc_buffer: allocating 1024.00 MiB on device 0: cudaMalloc failed: out of memory``,
``alloc_tensor_range: failed to allocate CUDA0 buffer of size 1073741824``,
``llama_model_load: error loading model: unable to allocate CUDA0 buffer``,
``CUDA error: out of memory`` (any CUDA call, through ggml_cuda_error).
The gateway's scheduler retries such a start once after making room (gateway/scheduling/scheduler.py).
"""

from __future__ import annotations

import re

_OUT_OF_GPU_MEMORY = re.compile(
    r"cudaMalloc failed: out of memory"
    r"|CUDA error: out of memory"
    r"|(failed to|unable to) allocate CUDA\d* buffer"
    r"|ggml_backend_cuda_buffer_type_alloc_buffer: allocating .* failed"
    r"|CUBLAS_STATUS_ALLOC_FAILED",
    re.IGNORECASE)


def out_of_gpu_memory(log_tail: list[str]) -> bool:
    return any(_OUT_OF_GPU_MEMORY.search(line) for line in log_tail)
