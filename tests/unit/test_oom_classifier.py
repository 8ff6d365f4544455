"""Telling a CUDA out-of-memory death from other failed starts, on llama.cpp's own log lines."""

from __future__ import annotations

import pytest

from orchestrator.oom import out_of_gpu_memory


@pytest.mark.parametrize("line", [
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: cudaMalloc failed: out of memory",
    "alloc_tensor_range: failed to allocate CUDA0 buffer of size 4294967296",
    "ggml_gallocr_reserve_n: failed to allocate CUDA1 buffer of size 268435456",
    "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
    "CUDA error: out of memory",
    "cuBLAS error: CUBLAS_STATUS_ALLOC_FAILED",
])
def test_out_of_gpu_memory(line):
    assert out_of_gpu_memory(["load_tensors: loading model tensors, this can take a while...", line,
                              "main: exiting due to model loading error"])


@pytest.mark.parametrize("tail", [
    [],
    ["llama_model_load: error loading model: error loading model architecture: unknown model architecture: 'x'"],
    ["gguf_init_from_file_impl: failed to read magic", "llama_model_load: error loading model: invalid gguf"],
    ["alloc_tensor_range: failed to allocate CPU buffer of size 4294967296"],  # host RAM, not the GPU
    ["error while handling argument \"--tensor-split\": invalid value"],
])
def test_other_failures_are_not(tail):
    assert not out_of_gpu_memory(tail)
