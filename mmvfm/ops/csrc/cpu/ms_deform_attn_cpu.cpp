// Copyright (c) mmvfm contributors. All rights reserved.
//
// Multi-scale deformable attention on the CPU: forward and backward.
// Written for mmvfm (mmcv 2.x has a CUDA kernel only and falls back to a
// grid_sample formulation on the CPU); the sampling conventions are those
// of mmcv's CUDA kernel, see ../common/ms_deform_attn_common.h.
//
// Layout (mmcv's):
//   value            [B, K, H, C]   K = sum_l h_l * w_l keys, H heads
//   spatial_shapes   [L, 2]  int64  (h_l, w_l)
//   level_start_index[L]     int64  first key of each level
//   sampling_loc     [B, Q, H, L, P, 2]  (x, y) in [0, 1]
//   attn_weight      [B, Q, H, L, P]
//   output           [B, Q, H * C]
//
// Threads (at::parallel_for, so torch.set_num_threads is honoured): the
// forward splits the (batch, query) pairs; the backward splits the
// (batch, head, level) triples, each of which owns a disjoint slice of
// grad_value and of the location / weight gradients, and runs its queries
// in order: the value gradient is accumulated without atomics, in the
// same order on every run (deterministic for any thread count).
//
// Vector width: the kernels (ms_deform_attn_cpu_kernel.h) are compiled
// twice, for the baseline of the target and, with GCC on x86-64, for
// AVX2 + FMA (chosen by __builtin_cpu_supports when the op runs), so a
// wheel built here also runs on a CPU without AVX2. Loops over the
// channels are `omp simd` and unrolled for C = 32 (256-d, 8 heads).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <vector>

#include "../common/ms_deform_attn_args.h"
#include "../common/ms_deform_attn_common.h"

namespace mmvfm {
namespace {

namespace generic {
#include "ms_deform_attn_cpu_kernel.h"
}  // namespace generic

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MMVFM_CPU_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "ms_deform_attn_cpu_kernel.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

bool use_avx2() {
#ifdef MMVFM_CPU_AVX2
  static const bool ok =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

// The kernel `name` for scalar_t, unrolled for C = 32 where it applies, in
// the widest build the CPU runs.
#ifdef MMVFM_CPU_AVX2
#define MMVFM_CPU_KERNEL(name, scalar_t, c32)                             \
  (use_avx2() ? ((c32) ? avx2::name<scalar_t, 32> : avx2::name<scalar_t, 0>) \
              : ((c32) ? generic::name<scalar_t, 32>                      \
                       : generic::name<scalar_t, 0>))
#else
#define MMVFM_CPU_KERNEL(name, scalar_t, c32) \
  ((c32) ? generic::name<scalar_t, 32> : generic::name<scalar_t, 0>)
#endif

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value,
                                      const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index,
                              sampling_loc, attn_weight);
  auto v = value.contiguous();
  auto shapes = spatial_shapes.contiguous();
  auto starts = level_start_index.contiguous();
  auto loc = sampling_loc.contiguous();
  auto attn = attn_weight.contiguous();
  auto out = at::empty({d.batch, d.queries, d.heads * d.channels},
                       value.options());
  if (out.numel() == 0 || d.levels == 0 || d.points == 0) return out.zero_();
  check_keys(d, shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward",
                             [&] {
                               MMVFM_CPU_KERNEL(forward_impl, scalar_t,
                                                d.channels == 32)(
                                   d, v.data_ptr<scalar_t>(),
                                   shapes.data_ptr<int64_t>(),
                                   starts.data_ptr<int64_t>(),
                                   loc.data_ptr<scalar_t>(),
                                   attn.data_ptr<scalar_t>(),
                                   out.data_ptr<scalar_t>());
                             });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index,
                              sampling_loc, attn_weight);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == d.batch &&
                  grad_output.size(1) == d.queries &&
                  grad_output.size(2) == d.heads * d.channels,
              "ms_deform_attn: grad_output must be [B, Q, H * C], got ",
              grad_output.sizes());
  auto v = value.contiguous();
  auto shapes = spatial_shapes.contiguous();
  auto starts = level_start_index.contiguous();
  auto loc = sampling_loc.contiguous();
  auto attn = attn_weight.contiguous();
  auto g = grad_output.contiguous().to(value.scalar_type());
  // every element is written by the kernels (zeros first where they
  // accumulate), in parallel: no serial memset pass
  auto grad_value = at::empty_like(v);
  auto grad_loc = at::empty_like(loc);
  auto grad_attn = at::empty_like(attn);
  if (grad_attn.numel() == 0 || d.channels == 0 || d.keys == 0) {
    grad_value.zero_();
    grad_loc.zero_();
    grad_attn.zero_();
    return {grad_value, grad_loc, grad_attn};
  }
  check_keys(d, shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(
      value.scalar_type(), "ms_deform_attn_backward", [&] {
        const bool c32 = d.channels == 32;
        MMVFM_CPU_KERNEL(backward_points_impl, scalar_t, c32)(
            d, v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(),
            starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
            attn.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
            grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>());
        MMVFM_CPU_KERNEL(backward_value_impl, scalar_t, c32)(
            d, shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
            loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
            g.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>());
      });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmvfm, CPU, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace mmvfm
