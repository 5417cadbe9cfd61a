// Copyright (c) mmvfm contributors. All rights reserved.
//
// Multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021):
// the bilinear sampling shared by the CPU and CUDA kernels.
//
// Conventions (those of mmcv 2.x's CUDA kernel and of PyTorch's
// grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False),
// which the pure-PyTorch reference uses): a normalised location (x, y) in
// [0, 1] of a level of size (h, w) is the pixel coordinate
// (x * w - 0.5, y * h - 0.5); the four integer neighbours are weighted
// bilinearly and a neighbour outside the map contributes zero. A location
// whose pixel coordinate is <= -1 or >= the size samples nothing.
// Gradients w.r.t. the location use floor(): at an exact pixel centre the
// derivative is the one-sided one towards the next pixel, as grid_sample's.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MMVFM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MMVFM_HOST_DEVICE inline
#endif

namespace mmvfm {

// One sampling point on one level: its four integer neighbours
// k = 0..3 = (low, low), (low, high), (high, low), (high, high) in
// (row, col), each the key offset row * width + col, or -1 outside the
// map; and the fractional parts lh, lw of the pixel coordinate.
//
// Bilinear weights: (1-lh)(1-lw), (1-lh) lw, lh (1-lw), lh lw. With
// s_k = <something, value of neighbour k> (0 for a neighbour outside),
// the sample is sum_k weight_k s_k and its derivatives w.r.t. the pixel
// row / column are
//   d/dh = (1-lw)(s_2 - s_0) + lw (s_3 - s_1),
//   d/dw = (1-lh)(s_1 - s_0) + lh (s_3 - s_2).
template <typename T>
struct BilinearPoint {
  int64_t idx[4];
  T lh, lw;
  bool any;  // false: the point samples nothing (all idx are -1)

  MMVFM_HOST_DEVICE T weight(int k) const {
    const T row = (k & 2) ? lh : T(1) - lh;
    const T col = (k & 1) ? lw : T(1) - lw;
    return row * col;
  }
};

template <typename T>
MMVFM_HOST_DEVICE BilinearPoint<T> bilinear_point(T loc_x, T loc_y,
                                                  int64_t height,
                                                  int64_t width) {
  BilinearPoint<T> pt;
  const T h_im = loc_y * static_cast<T>(height) - static_cast<T>(0.5);
  const T w_im = loc_x * static_cast<T>(width) - static_cast<T>(0.5);
  pt.any = h_im > T(-1) && w_im > T(-1) && h_im < static_cast<T>(height) &&
           w_im < static_cast<T>(width);
  pt.idx[0] = pt.idx[1] = pt.idx[2] = pt.idx[3] = -1;
  pt.lh = pt.lw = T(0);
  if (!pt.any) return pt;
  const T h_floor = floor(h_im);
  const T w_floor = floor(w_im);
  const int64_t h_low = static_cast<int64_t>(h_floor);
  const int64_t w_low = static_cast<int64_t>(w_floor);
  pt.lh = h_im - h_floor;
  pt.lw = w_im - w_floor;
  const bool top = h_low >= 0, bottom = h_low + 1 <= height - 1;
  const bool left = w_low >= 0, right = w_low + 1 <= width - 1;
  const int64_t base = h_low * width + w_low;
  if (top && left) pt.idx[0] = base;
  if (top && right) pt.idx[1] = base + 1;
  if (bottom && left) pt.idx[2] = base + width;
  if (bottom && right) pt.idx[3] = base + width + 1;
  return pt;
}

}  // namespace mmvfm
