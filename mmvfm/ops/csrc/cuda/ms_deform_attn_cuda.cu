// Copyright (c) mmvfm contributors. All rights reserved.
//
// Multi-scale deformable attention on CUDA: forward and backward, for
// machines with torch but without mmcv. Written for mmvfm with the layout
// and sampling conventions of ../cpu/ms_deform_attn_cpu.cpp and
// ../common/ms_deform_attn_common.h (mmcv 2.x's), so the CPU kernel, this
// one and mmvfm.ops.ms_deform_attn_pytorch agree.
//
// dtypes: float32, float64, float16, bfloat16; half-precision inputs are
// accumulated in float32 (at::opmath_type), and their value gradient is
// summed in a float32 buffer (atomicAdd) then cast.
//
// Threads: the forward has one thread per output element (b, q, h, c),
// adjacent threads adjacent channels (coalesced reads of a key's
// channels); the backward one thread per sampling point (b, q, h, l, p),
// which reduces over the channels for the location / weight gradients
// and scatters the value gradient with atomicAdd (so the value gradient's
// summation order, unlike the CPU kernel's, is not fixed).
// (c10's CUDA headers only: ATen/cuda/CUDAContext.h would need the
// cuBLAS / cuSPARSE headers too)
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../common/ms_deform_attn_args.h"
#include "../common/ms_deform_attn_common.h"

namespace mmvfm {
namespace {

constexpr int kThreads = 256;

inline int64_t num_blocks(int64_t n) { return (n + kThreads - 1) / kThreads; }

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(Dims d, const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn,
                               scalar_t* __restrict__ out) {
  const int64_t n = d.batch * d.queries * d.heads * d.channels;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) +
                      threadIdx.x;
  if (idx >= n) return;
  const int64_t c = idx % d.channels;
  const int64_t bqh = idx / d.channels;  // (b * Q + q) * H + h
  const int64_t h = bqh % d.heads;
  const int64_t b = bqh / (d.heads * d.queries);
  const int64_t key_stride = d.heads * d.channels;
  acc_t sum = 0;
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const scalar_t* v_level =
        value + ((b * d.keys + starts[l]) * d.heads + h) * d.channels + c;
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t i = (bqh * d.levels + l) * d.points + p;
      const auto pt = bilinear_point<acc_t>(static_cast<acc_t>(loc[2 * i]),
                                            static_cast<acc_t>(loc[2 * i + 1]),
                                            height, width);
      if (!pt.any) continue;
      acc_t sample = 0;
      for (int k = 0; k < 4; ++k)
        if (pt.idx[k] >= 0)
          sample += pt.weight(k) *
                    static_cast<acc_t>(v_level[pt.idx[k] * key_stride]);
      sum += static_cast<acc_t>(attn[i]) * sample;
    }
  }
  out[idx] = static_cast<scalar_t>(sum);
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(Dims d, const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts,
                                const scalar_t* __restrict__ loc,
                                const scalar_t* __restrict__ attn,
                                const scalar_t* __restrict__ grad_out,
                                acc_t* __restrict__ grad_value,
                                scalar_t* __restrict__ grad_loc,
                                scalar_t* __restrict__ grad_attn) {
  const int64_t n = d.batch * d.queries * d.heads * d.levels * d.points;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) +
                    threadIdx.x;
  if (i >= n) return;
  const int64_t l = (i / d.points) % d.levels;
  const int64_t bqh = i / (d.points * d.levels);
  const int64_t h = bqh % d.heads;
  const int64_t b = bqh / (d.heads * d.queries);
  const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
  const int64_t key_stride = d.heads * d.channels;
  const int64_t level_offset =
      ((b * d.keys + starts[l]) * d.heads + h) * d.channels;
  const auto pt = bilinear_point<acc_t>(static_cast<acc_t>(loc[2 * i]),
                                        static_cast<acc_t>(loc[2 * i + 1]),
                                        height, width);
  if (!pt.any) {
    grad_attn[i] = grad_loc[2 * i] = grad_loc[2 * i + 1] = scalar_t(0);
    return;
  }
  const acc_t a = static_cast<acc_t>(attn[i]);
  const scalar_t* g = grad_out + bqh * d.channels;
  acc_t w[4];
  for (int k = 0; k < 4; ++k) w[k] = pt.weight(k);
  acc_t dot[4] = {0, 0, 0, 0};  // <grad_out, value of neighbour k>
  for (int64_t c = 0; c < d.channels; ++c) {
    const acc_t gc = static_cast<acc_t>(g[c]);
    for (int k = 0; k < 4; ++k) {
      if (pt.idx[k] < 0) continue;
      const int64_t off = level_offset + pt.idx[k] * key_stride + c;
      dot[k] += gc * static_cast<acc_t>(value[off]);
      atomicAdd(grad_value + off, a * w[k] * gc);
    }
  }
  const acc_t lh = pt.lh, lw = pt.lw, hh = 1 - lh, hw = 1 - lw;
  grad_attn[i] = static_cast<scalar_t>(hh * (hw * dot[0] + lw * dot[1]) +
                                       lh * (hw * dot[2] + lw * dot[3]));
  const acc_t g_h = hw * (dot[2] - dot[0]) + lw * (dot[3] - dot[1]);
  const acc_t g_w = hh * (dot[1] - dot[0]) + lh * (dot[3] - dot[2]);
  grad_loc[2 * i] = static_cast<scalar_t>(a * g_w * static_cast<acc_t>(width));
  grad_loc[2 * i + 1] =
      static_cast<scalar_t>(a * g_h * static_cast<acc_t>(height));
}

void check_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                const at::Tensor& level_start_index) {
  TORCH_CHECK(spatial_shapes.device() == value.device() &&
                  level_start_index.device() == value.device(),
              "ms_deform_attn: spatial_shapes and level_start_index must be "
              "on value's device ",
              value.device());
}

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value,
                                       const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index,
                              sampling_loc, attn_weight);
  check_cuda(value, spatial_shapes, level_start_index);
  const c10::cuda::CUDAGuard guard(value.device());
  auto v = value.contiguous();
  auto shapes = spatial_shapes.contiguous();
  auto starts = level_start_index.contiguous();
  auto loc = sampling_loc.contiguous();
  auto attn = attn_weight.contiguous();
  auto out = at::zeros({d.batch, d.queries, d.heads * d.channels},
                       value.options());
  if (out.numel() == 0 || d.levels == 0 || d.points == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward",
      [&] {
        using acc_t = at::opmath_type<scalar_t>;
        forward_kernel<scalar_t, acc_t>
            <<<num_blocks(out.numel()), kThreads, 0, stream>>>(
                d, v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(),
                starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
                attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index,
                              sampling_loc, attn_weight);
  check_cuda(value, spatial_shapes, level_start_index);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == d.batch &&
                  grad_output.size(1) == d.queries &&
                  grad_output.size(2) == d.heads * d.channels,
              "ms_deform_attn: grad_output must be [B, Q, H * C], got ",
              grad_output.sizes());
  const c10::cuda::CUDAGuard guard(value.device());
  auto v = value.contiguous();
  auto shapes = spatial_shapes.contiguous();
  auto starts = level_start_index.contiguous();
  auto loc = sampling_loc.contiguous();
  auto attn = attn_weight.contiguous();
  auto g = grad_output.contiguous().to(value.scalar_type());
  const auto acc_dtype = at::toOpMathType(value.scalar_type());
  auto grad_value_acc = at::zeros(v.sizes(), v.options().dtype(acc_dtype));
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  if (grad_attn.numel() > 0 && d.channels > 0 && d.keys > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(),
        "ms_deform_attn_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          backward_kernel<scalar_t, acc_t>
              <<<num_blocks(grad_attn.numel()), kThreads, 0, stream>>>(
                  d, v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(),
                  starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
                  attn.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                  grad_value_acc.data_ptr<acc_t>(),
                  grad_loc.data_ptr<scalar_t>(),
                  grad_attn.data_ptr<scalar_t>());
        });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {grad_value_acc.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmvfm, CUDA, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace mmvfm
