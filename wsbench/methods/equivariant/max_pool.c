/* Gradient of max pooling over one axis, in one pass, for CPU (float32).

   torch.max(x, dim) sends each output's gradient to the first index of the maximum along the axis
   (the official DWSNets code back-propagates through it). For x viewed as [outer, n, inner] and the
   maxima values [outer, inner]: grad_x[o, j, i] = grad[o, i] at the first j where x[o, j, i] equals
   values[o, i] (a NaN maximum matches the first NaN), 0 elsewhere. The loops run over the contiguous
   inner axis (DWSNet's channels), so they vectorise; x is read once and grad_x written once, where
   the float-ops formulation in cpu_kernels.first_argmax takes four passes, a zero fill and a scatter.
   Built by wsbench/native_build.py. */
#include <stdint.h>

#define CHUNK 256

int wsb_max_first_backward(const float *x, const float *values, const float *grad, float *grad_x,
                           int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i0 = 0; i0 < inner; i0 += CHUNK) {
            const int64_t m = inner - i0 < CHUNK ? inner - i0 : CHUNK;
            const float *v = values + o * inner + i0, *g = grad + o * inner + i0;
            int32_t open[CHUNK]; /* 1 while no maximum has been met at this position yet */
            for (int64_t i = 0; i < m; i++) open[i] = 1;
            for (int64_t j = 0; j < n; j++) {
                const float *xj = x + (o * n + j) * inner + i0;
                float *out = grad_x + (o * n + j) * inner + i0;
                for (int64_t i = 0; i < m; i++) {
                    const int32_t hit = open[i] & ((xj[i] == v[i]) | ((xj[i] != xj[i]) & (v[i] != v[i])));
                    out[i] = hit ? g[i] : 0.0f;
                    open[i] &= !hit;
                }
            }
        }
    }
    return 0;
}
