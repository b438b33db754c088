/* Fused set attention with small heads, for CPU: softmax(q k^T scale) v per (network, head).

   DWSNet's set layers attend over sets of a few dozen neurons with heads of 4-8 channels. Done with
   batched products, every head writes and reads back its n x n score matrix and each product has
   4-8 columns, far below what the matrix kernels are made for. Here one (network, head) pair is one
   work item, and the loops run over blocks of 8 queries held in one SIMD vector: for each key j the
   block's 8 scores, their running maximum, exponentials and the weighted sum of values stay in
   registers, with no horizontal sums in the forward pass. Only the output and one log-sum-exp per
   query are written. The backward pass recomputes the probabilities from the log-sum-exp (as flash
   attention does); the key and value gradients are summed over queries in 8-lane partial sums and
   reduced once per work item.

   Layout: q, k, v, out and the gradients are contiguous [B, n, H, d] (a linear layer's output
   [B, n, H*d] viewed per head, so no transpose is copied); lse is [B, H, n].
   Vectors are GCC vector extensions (8 floats), lowered to whatever SIMD the CPU has. Built by
   wsbench/native_build.py. NaN and inf propagate as in the plain ops (a NaN score gives a NaN row). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline vf splat(float x) { return (vf){x, x, x, x, x, x, x, x}; }

static inline vf select_vf(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

static inline vf max_vf(vf a, vf b) { return select_vf(a > b, a, b); }  /* keeps b where a is NaN */

/* exp(x) for x <= 0 (Cephes' expf: reduction by ln 2 with round-to-nearest, degree-5 polynomial,
   exponent bits set directly). x < -87 gives exp(-87) ~ 1.6e-38 instead of a denormal; NaN stays NaN. */
static inline vf exp_nonpositive(vf x) {
    const vf lo = splat(-87.0f), magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    x = select_vf(x < lo, lo, x);
    const vf t = x * splat(1.44269504088896341f) + magic;
    const vf fn = t - magic;
    const vf r = (x - fn * splat(0.693359375f)) + fn * splat(2.12194440e-4f);
    vf p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    const vf e = p * r * r + r + splat(1.0f);
    const vi n = (vi)t - (vi)magic; /* the integer in t's low mantissa bits */
    return e * (vf)((n + 127) << 23);
}

static inline float hsum(vf x) {
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += x[l];
    return s;
}

/* Query block [i0, i0 + LANES) of one head, channel-major: t[c][lane] = x[(i0 + lane) * row + c] * mul,
   zero past n. */
static inline void load_block(const float *x, vf *t, int64_t i0, int64_t n, int64_t d, int64_t row, float mul) {
    for (int64_t c = 0; c < d; c++) t[c] = splat(0.0f);
    for (int64_t l = 0; l < LANES && i0 + l < n; l++)
        for (int64_t c = 0; c < d; c++) t[c][l] = x[(i0 + l) * row + c] * mul;
}

static inline void store_block(float *x, const vf *t, int64_t i0, int64_t n, int64_t d, int64_t row, vf mul) {
    for (int64_t l = 0; l < LANES && i0 + l < n; l++)
        for (int64_t c = 0; c < d; c++) x[(i0 + l) * row + c] = t[c][l] * mul[l];
}

/* One head's forward pass; D > 0 fixes the head size at compile time (registers), 0 reads d. */
static inline __attribute__((always_inline)) void forward_head(const float *q, const float *k, const float *v,
        float *out, float *lse, int64_t n, int64_t d_runtime, int64_t row, float scale, vf *qt, vf *acc,
        vf *s, const int64_t D) {
    const int64_t d = D > 0 ? D : d_runtime;
    for (int64_t i0 = 0; i0 < n; i0 += LANES) {
        load_block(q, qt, i0, n, d, row, scale);
        vf m = splat(-INFINITY);
        for (int64_t j = 0; j < n; j++) {
            const float *kj = k + j * row;
            vf sj = splat(0.0f);
            for (int64_t c = 0; c < d; c++) sj += qt[c] * kj[c];
            s[j] = sj;
            m = max_vf(sj, m);
        }
        vf z = splat(0.0f);
        for (int64_t c = 0; c < d; c++) acc[c] = splat(0.0f);
        for (int64_t j = 0; j < n; j++) {
            const float *vj = v + j * row;
            const vf p = exp_nonpositive(s[j] - m);
            z += p;
            for (int64_t c = 0; c < d; c++) acc[c] += p * vj[c];
        }
        store_block(out, acc, i0, n, d, row, splat(1.0f) / z);
        for (int64_t l = 0; l < LANES && i0 + l < n; l++) lse[i0 + l] = m[l] + logf(z[l]);
    }
}

/* Per query block: the queries scaled (qt), the output gradient (gt), delta = rowsum(g * o) and lse, in
   lanes; padded lanes get zeros, so that they add nothing to the key and value gradients. */
static inline void load_backward_block(const float *q, const float *g, const float *o, const float *lse, vf *qt,
        vf *gt, vf *delta, vf *l, int64_t i0, int64_t n, int64_t d, int64_t row, float scale) {
    load_block(q, qt, i0, n, d, row, scale);
    load_block(g, gt, i0, n, d, row, 1.0f);
    *delta = *l = splat(0.0f);
    for (int64_t lane = 0; lane < LANES && i0 + lane < n; lane++) {
        float dl = 0.0f;
        for (int64_t c = 0; c < d; c++) dl += g[(i0 + lane) * row + c] * o[(i0 + lane) * row + c];
        (*delta)[lane] = dl;
        (*l)[lane] = lse[i0 + lane];
    }
}

/* One head's backward pass (D as in forward_head), two query blocks at a time: each key's partial
   sums dkacc, dvacc (n * d vectors) are read and written once for 16 queries. */
static inline __attribute__((always_inline)) void backward_head(const float *q, const float *k, const float *v,
        const float *o, const float *lse, const float *g, float *dq, float *dk, float *dv, int64_t n,
        int64_t d_runtime, int64_t row, float scale, vf *qt, vf *gt, vf *acc, vf *dkacc, vf *dvacc,
        const int64_t D) {
    const int64_t d = D > 0 ? D : d_runtime;
    vf *qt1 = qt + d, *gt1 = gt + d, *acc1 = acc + d;
    for (int64_t x = 0; x < n * d; x++) dkacc[x] = dvacc[x] = splat(0.0f);
    for (int64_t i0 = 0; i0 < n; i0 += 2 * LANES) {
        vf delta0, l0, delta1, l1;
        load_backward_block(q, g, o, lse, qt, gt, &delta0, &l0, i0, n, d, row, scale);
        load_backward_block(q, g, o, lse, qt1, gt1, &delta1, &l1, i0 + LANES, n, d, row, scale);
        for (int64_t c = 0; c < d; c++) acc[c] = acc1[c] = splat(0.0f);
        for (int64_t j = 0; j < n; j++) {
            const float *kj = k + j * row, *vj = v + j * row;
            vf s0 = splat(0.0f), dp0 = splat(0.0f), s1 = splat(0.0f), dp1 = splat(0.0f);
            for (int64_t c = 0; c < d; c++) {
                s0 += qt[c] * kj[c];
                dp0 += gt[c] * vj[c];
                s1 += qt1[c] * kj[c];
                dp1 += gt1[c] * vj[c];
            }
            const vf p0 = exp_nonpositive(s0 - l0), p1 = exp_nonpositive(s1 - l1);
            const vf ds0 = p0 * (dp0 - delta0), ds1 = p1 * (dp1 - delta1);
            vf *dkj = dkacc + j * d, *dvj = dvacc + j * d;
            for (int64_t c = 0; c < d; c++) {
                acc[c] += ds0 * kj[c];
                acc1[c] += ds1 * kj[c];
                dkj[c] += ds0 * qt[c] + ds1 * qt1[c];
                dvj[c] += p0 * gt[c] + p1 * gt1[c];
            }
        }
        store_block(dq, acc, i0, n, d, row, splat(scale));
        store_block(dq, acc1, i0 + LANES, n, d, row, splat(scale));
    }
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < d; c++) {
            dk[j * row + c] = hsum(dkacc[j * d + c]);
            dv[j * row + c] = hsum(dvacc[j * d + c]);
        }
}

/* One call's tensors and sizes; each work item is one (network, head) pair bh = b * H + h. */
typedef struct {
    const float *q, *k, *v, *o, *g;
    float *out, *lse, *dq, *dk, *dv;
    int64_t B, n, H, d;
    float scale;
} job;

static void forward_item(const job *a, int64_t bh, vf *buf) {
    const int64_t n = a->n, d = a->d, row = a->H * d, base = (bh / a->H) * n * row + (bh % a->H) * d;
    const float *q = a->q + base, *k = a->k + base, *v = a->v + base;
    float *out = a->out + base, *lse = a->lse + bh * n;
    vf *qt = buf, *acc = buf + d, *s = buf + 2 * d;
    if (d == 4) forward_head(q, k, v, out, lse, n, d, row, a->scale, qt, acc, s, 4);
    else if (d == 8) forward_head(q, k, v, out, lse, n, d, row, a->scale, qt, acc, s, 8);
    else forward_head(q, k, v, out, lse, n, d, row, a->scale, qt, acc, s, 0);
}

static void backward_item(const job *a, int64_t bh, vf *buf) {
    const int64_t n = a->n, d = a->d, row = a->H * d, base = (bh / a->H) * n * row + (bh % a->H) * d;
    const float *q = a->q + base, *k = a->k + base, *v = a->v + base, *o = a->o + base, *g = a->g + base;
    const float *lse = a->lse + bh * n;
    float *dq = a->dq + base, *dk = a->dk + base, *dv = a->dv + base;
    vf *qt = buf, *gt = buf + 2 * d, *acc = buf + 4 * d, *dkacc = buf + 6 * d, *dvacc = dkacc + n * d;
    if (d == 4) backward_head(q, k, v, o, lse, g, dq, dk, dv, n, d, row, a->scale, qt, gt, acc, dkacc, dvacc, 4);
    else if (d == 8) backward_head(q, k, v, o, lse, g, dq, dk, dv, n, d, row, a->scale, qt, gt, acc, dkacc, dvacc, 8);
    else backward_head(q, k, v, o, lse, g, dq, dk, dv, n, d, row, a->scale, qt, gt, acc, dkacc, dvacc, 0);
}

/* Runs `item` on every (network, head) pair on torch's OpenMP threads, each thread with its own buffer
   of `buf_vectors` vectors. Returns 1 where a buffer could not be allocated (the outputs are then
   incomplete), else 0. */
static int run_items(const job *a, int64_t buf_vectors, void (*item)(const job *, int64_t, vf *)) {
    int failed = 0;
#pragma omp parallel
    {
        vf *buf = (vf *)aligned_alloc(sizeof(vf), (size_t)buf_vectors * sizeof(vf));
        if (buf == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < a->B * a->H; bh++)
            if (buf != NULL) item(a, bh, buf);
        free(buf);
    }
    return failed;
}

int wsb_set_attention_forward(const float *q, const float *k, const float *v, float *out, float *lse,
                              int64_t B, int64_t n, int64_t H, int64_t d, float scale) {
    const job a = {.q = q, .k = k, .v = v, .out = out, .lse = lse, .B = B, .n = n, .H = H, .d = d, .scale = scale};
    return run_items(&a, 2 * d + n, forward_item);
}

/* g: gradient of the output; o: the forward output. Writes dq, dk, dv (same layout as q). */
int wsb_set_attention_backward(const float *q, const float *k, const float *v, const float *o,
                               const float *lse, const float *g, float *dq, float *dk, float *dv,
                               int64_t B, int64_t n, int64_t H, int64_t d, float scale) {
    const job a = {.q = q, .k = k, .v = v, .o = o, .g = g, .lse = (float *)lse, .dq = dq, .dk = dk, .dv = dv,
                   .B = B, .n = n, .H = H, .d = d, .scale = scale};
    return run_items(&a, 6 * d + 2 * n * d, backward_item);
}
