// Copyright (c) mmvfm contributors. All rights reserved.
//
// Argument checks of the multi-scale deformable attention ops, shared by
// the CPU and CUDA launchers (host code).
#pragma once

#include <torch/types.h>

namespace mmvfm {

struct Dims {
  int64_t batch, keys, heads, channels, queries, levels, points;
};

// Shapes, dtypes and devices of the inputs; an error names the argument.
inline Dims check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index,
                  const at::Tensor& sampling_loc,
                  const at::Tensor& attn_weight) {
  TORCH_CHECK(value.dim() == 4,
              "ms_deform_attn: value must be [B, K, H, C], got ",
              value.sizes());
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "ms_deform_attn: sampling_locations must be "
              "[B, Q, H, L, P, 2], got ",
              sampling_loc.sizes());
  TORCH_CHECK(attn_weight.dim() == 5,
              "ms_deform_attn: attention_weights must be [B, Q, H, L, P], "
              "got ",
              attn_weight.sizes());
  Dims d{value.size(0),        value.size(1),        value.size(2),
         value.size(3),        sampling_loc.size(1), sampling_loc.size(3),
         sampling_loc.size(4)};
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == d.levels &&
                  spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be [L, 2] with L = ",
              d.levels, " levels, got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 &&
                  level_start_index.size(0) == d.levels,
              "ms_deform_attn: level_start_index must be [L], got ",
              level_start_index.sizes());
  TORCH_CHECK(sampling_loc.size(0) == d.batch &&
                  sampling_loc.size(2) == d.heads,
              "ms_deform_attn: sampling_locations ", sampling_loc.sizes(),
              " does not match value ", value.sizes(), " in B or H");
  TORCH_CHECK(attn_weight.sizes() == sampling_loc.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights ", attn_weight.sizes(),
              " does not match sampling_locations ", sampling_loc.sizes());
  TORCH_CHECK(value.scalar_type() == sampling_loc.scalar_type() &&
                  value.scalar_type() == attn_weight.scalar_type(),
              "ms_deform_attn: value, sampling_locations and "
              "attention_weights must have one dtype, got ",
              value.scalar_type(), ", ", sampling_loc.scalar_type(), ", ",
              attn_weight.scalar_type());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be "
              "int64");
  return d;
}

// The level starts against the spatial shapes (host pointers).
inline void check_keys(const Dims& d, const int64_t* shapes, const int64_t* starts) {
  int64_t total = 0;
  for (int64_t l = 0; l < d.levels; ++l) {
    TORCH_CHECK(shapes[2 * l] >= 0 && shapes[2 * l + 1] >= 0,
                "ms_deform_attn: negative spatial shape at level ", l);
    TORCH_CHECK(starts[l] == total, "ms_deform_attn: level_start_index[", l,
                "] = ", starts[l], ", expected ", total,
                " (the cumulative h * w of spatial_shapes)");
    total += shapes[2 * l] * shapes[2 * l + 1];
  }
  TORCH_CHECK(total == d.keys, "ms_deform_attn: spatial_shapes cover ",
              total, " keys, value has ", d.keys);
}

}  // namespace mmvfm
