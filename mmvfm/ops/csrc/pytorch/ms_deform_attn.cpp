// Copyright (c) mmvfm contributors. All rights reserved.
//
// Operator schemas of mmvfm's compiled ops (namespace torch.ops.mmvfm).
// The kernels register themselves per device: cpu/ms_deform_attn_cpu.cpp
// (CPU) and cuda/ms_deform_attn_cuda.cu (CUDA). Shape inference for
// torch.compile and meta tensors (the fake kernels) lives in
// mmvfm/ops/ms_deform_attn.py, next to the autograd Function.
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(mmvfm, m) {
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, "
      "Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, "
      "Tensor attention_weights, Tensor grad_output) "
      "-> (Tensor, Tensor, Tensor)");
}

// `import mmvfm._ext` (setup.py build) and torch.utils.cpp_extension.load
// both need a Python module; the ops are reached through torch.ops.mmvfm.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmvfm compiled ops (torch.ops.mmvfm.*)";
}
