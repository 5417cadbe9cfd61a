// Copyright (c) mmvfm contributors. All rights reserved.
//
// The CPU kernels of multi-scale deformable attention, included twice by
// ms_deform_attn_cpu.cpp: once for any x86-64 / other CPU, once compiled
// for AVX2 + FMA (chosen at run time). No include guard and no includes
// on purpose: the includer puts it in a namespace of its own (after the
// headers it needs and its Dims). See ms_deform_attn_cpu.cpp.

template <typename scalar_t, int64_t kC>
void forward_impl(const Dims& d, const scalar_t* value,
                  const int64_t* shapes, const int64_t* starts,
                  const scalar_t* loc, const scalar_t* attn,
                  scalar_t* out) {
  const int64_t H = d.heads, L = d.levels, P = d.points;
  const int64_t C = kC > 0 ? kC : d.channels;  // constant: unrolled loops
  const int64_t key_stride = H * C;  // between consecutive keys
  const int64_t grain =
      std::max<int64_t>(1, 2048 / std::max<int64_t>(1, H * L * P));
  at::parallel_for(0, d.batch * d.queries, grain, [&](int64_t begin,
                                                     int64_t end) {
    // an outside corner reads zeros (weight 0): one branch-free loop
    const std::vector<scalar_t> zeros(C, scalar_t(0));
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / d.queries;
      for (int64_t h = 0; h < H; ++h) {
        scalar_t* o = out + (bq * H + h) * C;
        std::fill(o, o + C, scalar_t(0));  // `out` is not zero-initialised
        const int64_t point0 = (bq * H + h) * L * P;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const scalar_t* v_level =
              value + ((b * d.keys + starts[l]) * H + h) * C;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t i = point0 + l * P + p;
            const auto pt = bilinear_point<scalar_t>(
                loc[2 * i], loc[2 * i + 1], height, width);
            if (!pt.any) continue;
            const scalar_t a = attn[i];
            const scalar_t* v[4];
            scalar_t w[4];
            for (int k = 0; k < 4; ++k) {
              v[k] = pt.idx[k] < 0 ? zeros.data()
                                   : v_level + pt.idx[k] * key_stride;
              w[k] = a * pt.weight(k);
            }
#pragma omp simd
            for (int64_t ch = 0; ch < C; ++ch)
              o[ch] += w[0] * v[0][ch] + w[1] * v[1][ch] + w[2] * v[2][ch] +
                       w[3] * v[3][ch];
          }
        }
      }
    }
  });
}

// Backward, pass 1: the gradients of the locations and weights, one
// (batch, query) pair per task as the forward (each point's own outputs).
template <typename scalar_t, int64_t kC>
void backward_points_impl(const Dims& d, const scalar_t* value,
                          const int64_t* shapes, const int64_t* starts,
                          const scalar_t* loc, const scalar_t* attn,
                          const scalar_t* grad_out, scalar_t* grad_loc,
                          scalar_t* grad_attn) {
  const int64_t H = d.heads, L = d.levels, P = d.points;
  const int64_t C = kC > 0 ? kC : d.channels;
  const int64_t key_stride = H * C;
  const int64_t grain =
      std::max<int64_t>(1, 2048 / std::max<int64_t>(1, H * L * P));
  at::parallel_for(0, d.batch * d.queries, grain, [&](int64_t begin,
                                                     int64_t end) {
    const std::vector<scalar_t> zeros(C, scalar_t(0));
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / d.queries;
      for (int64_t h = 0; h < H; ++h) {
        const scalar_t* g = grad_out + (bq * H + h) * C;
        const int64_t point0 = (bq * H + h) * L * P;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const scalar_t* v_level =
              value + ((b * d.keys + starts[l]) * H + h) * C;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t i = point0 + l * P + p;
            const auto pt = bilinear_point<scalar_t>(
                loc[2 * i], loc[2 * i + 1], height, width);
            if (!pt.any) {  // the outputs are not zero-initialised
              grad_attn[i] = grad_loc[2 * i] = grad_loc[2 * i + 1] = 0;
              continue;
            }
            const scalar_t* v[4];
            for (int k = 0; k < 4; ++k)
              v[k] = pt.idx[k] < 0 ? zeros.data()
                                   : v_level + pt.idx[k] * key_stride;
            // <grad_out, v> of each corner
            scalar_t dot0 = 0, dot1 = 0, dot2 = 0, dot3 = 0;
#pragma omp simd reduction(+ : dot0, dot1, dot2, dot3)
            for (int64_t ch = 0; ch < C; ++ch) {
              dot0 += g[ch] * v[0][ch];
              dot1 += g[ch] * v[1][ch];
              dot2 += g[ch] * v[2][ch];
              dot3 += g[ch] * v[3][ch];
            }
            // an outside neighbour's dot is 0 (it read zeros)
            const scalar_t lh = pt.lh, lw = pt.lw, hh = 1 - lh, hw = 1 - lw;
            const scalar_t g_attn =
                hh * (hw * dot0 + lw * dot1) + lh * (hw * dot2 + lw * dot3);
            const scalar_t g_h = hw * (dot2 - dot0) + lw * (dot3 - dot1);
            const scalar_t g_w = hh * (dot1 - dot0) + lh * (dot3 - dot2);
            const scalar_t a = attn[i];
            grad_attn[i] = g_attn;
            // d h_im / d y = height, d w_im / d x = width
            grad_loc[2 * i] = a * g_w * static_cast<scalar_t>(width);
            grad_loc[2 * i + 1] = a * g_h * static_cast<scalar_t>(height);
          }
        }
      }
    }
  });
}

// Backward, pass 2: the gradient of the value, scattered. One (batch,
// head, level) triple per task: it owns a disjoint slice of grad_value and
// adds its queries' contributions in query order, so the sums are the same
// on every run and for every thread count, without atomics.
template <typename scalar_t, int64_t kC>
void backward_value_impl(const Dims& d, const int64_t* shapes,
                         const int64_t* starts, const scalar_t* loc,
                         const scalar_t* attn, const scalar_t* grad_out,
                         scalar_t* grad_value) {
  const int64_t H = d.heads, L = d.levels, P = d.points;
  const int64_t C = kC > 0 ? kC : d.channels;
  const int64_t key_stride = H * C;
  at::parallel_for(0, d.batch * H * L, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(C);  // an outside corner's (weight 0)
    for (int64_t bhl = begin; bhl < end; ++bhl) {
      const int64_t l = bhl % L;
      const int64_t h = (bhl / L) % H;
      const int64_t b = bhl / (L * H);
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      scalar_t* gv_level =
          grad_value + ((b * d.keys + starts[l]) * H + h) * C;
      // `grad_value` is not zero-initialised: this task's slice first
      for (int64_t key = 0; key < height * width; ++key)
        std::fill(gv_level + key * key_stride, gv_level + key * key_stride + C,
                  scalar_t(0));
      for (int64_t q = 0; q < d.queries; ++q) {
        const int64_t bqh = (b * d.queries + q) * H + h;
        const scalar_t* g = grad_out + bqh * C;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t i = (bqh * L + l) * P + p;
          const auto pt = bilinear_point<scalar_t>(
              loc[2 * i], loc[2 * i + 1], height, width);
          if (!pt.any) continue;
          scalar_t* gv[4];
          scalar_t w[4];
          for (int k = 0; k < 4; ++k) {
            gv[k] = pt.idx[k] < 0 ? scratch.data()
                                  : gv_level + pt.idx[k] * key_stride;
            w[k] = attn[i] * pt.weight(k);
          }
#pragma omp simd
          for (int64_t ch = 0; ch < C; ++ch) {
            gv[0][ch] += w[0] * g[ch];
            gv[1][ch] += w[1] * g[ch];
            gv[2][ch] += w[2] * g[ch];
            gv[3][ch] += w[3] * g[ch];
          }
        }
      }
    }
  });
}
