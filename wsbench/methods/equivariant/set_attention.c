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

   Layout: q, k and v are the three thirds of one packed [B, n, 3 * H * d] tensor (a linear layer's
   output; head h on channels h*d..(h+1)*d of each third), read in place with row stride 3*H*d; the
   output and its gradient are [B, n, H * d]; lse is [B, H, n]; the gradient of the packed input is
   written packed. With `residual`, the output is q + attention (the set block's O = Q + A(Q, K, V)).
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

/* One head's forward pass; D > 0 fixes the head size at compile time (registers), 0 reads d. Rows of q,
   k, v are in_row apart, rows of out out_row apart. */
static inline __attribute__((always_inline)) void forward_head(const float *q, const float *k, const float *v,
        float *out, float *lse, int64_t n, int64_t d_runtime, int64_t in_row, int64_t out_row, float scale,
        int residual, vf *qt, vf *acc, vf *s, const int64_t D) {
    const int64_t d = D > 0 ? D : d_runtime;
    for (int64_t i0 = 0; i0 < n; i0 += LANES) {
        load_block(q, qt, i0, n, d, in_row, scale);
        vf m = splat(-INFINITY);
        for (int64_t j = 0; j < n; j++) {
            const float *kj = k + j * in_row;
            vf sj = splat(0.0f);
            for (int64_t c = 0; c < d; c++) sj += qt[c] * kj[c];
            s[j] = sj;
            m = max_vf(sj, m);
        }
        vf z = splat(0.0f);
        for (int64_t c = 0; c < d; c++) acc[c] = splat(0.0f);
        for (int64_t j = 0; j < n; j++) {
            const float *vj = v + j * in_row;
            const vf p = exp_nonpositive(s[j] - m);
            z += p;
            for (int64_t c = 0; c < d; c++) acc[c] += p * vj[c];
        }
        const vf inv = splat(1.0f) / z;
        for (int64_t l = 0; l < LANES && i0 + l < n; l++) {
            const float *qi = q + (i0 + l) * in_row;
            float *oi = out + (i0 + l) * out_row;
            for (int64_t c = 0; c < d; c++) oi[c] = acc[c][l] * inv[l] + (residual ? qi[c] : 0.0f);
            lse[i0 + l] = m[l] + logf(z[l]);
        }
    }
}

/* Per query block: the queries scaled (qt), the output gradient (gt), delta = rowsum(g * attention output)
   and lse, in lanes; padded lanes get zeros, so that they add nothing to the key and value gradients. */
static inline void load_backward_block(const float *q, const float *g, const float *o, const float *lse, vf *qt,
        vf *gt, vf *delta, vf *l, int64_t i0, int64_t n, int64_t d, int64_t in_row, int64_t out_row, float scale,
        int residual) {
    load_block(q, qt, i0, n, d, in_row, scale);
    load_block(g, gt, i0, n, d, out_row, 1.0f);
    *delta = *l = splat(0.0f);
    for (int64_t lane = 0; lane < LANES && i0 + lane < n; lane++) {
        const float *gi = g + (i0 + lane) * out_row, *oi = o + (i0 + lane) * out_row, *qi = q + (i0 + lane) * in_row;
        float dl = 0.0f;
        for (int64_t c = 0; c < d; c++) dl += gi[c] * (oi[c] - (residual ? qi[c] : 0.0f));
        (*delta)[lane] = dl;
        (*l)[lane] = lse[i0 + lane];
    }
}

/* One head's backward pass (D as in forward_head), two query blocks at a time: each key's partial
   sums dkacc, dvacc (n * d vectors) are read and written once for 16 queries. */
static inline __attribute__((always_inline)) void backward_head(const float *q, const float *k, const float *v,
        const float *o, const float *lse, const float *g, float *dq, float *dk, float *dv, int64_t n,
        int64_t d_runtime, int64_t in_row, int64_t out_row, float scale, int residual, vf *qt, vf *gt, vf *acc,
        vf *dkacc, vf *dvacc, const int64_t D) {
    const int64_t d = D > 0 ? D : d_runtime;
    vf *qt1 = qt + d, *gt1 = gt + d, *acc1 = acc + d;
    for (int64_t x = 0; x < n * d; x++) dkacc[x] = dvacc[x] = splat(0.0f);
    for (int64_t i0 = 0; i0 < n; i0 += 2 * LANES) {
        vf delta0, l0, delta1, l1;
        load_backward_block(q, g, o, lse, qt, gt, &delta0, &l0, i0, n, d, in_row, out_row, scale, residual);
        load_backward_block(q, g, o, lse, qt1, gt1, &delta1, &l1, i0 + LANES, n, d, in_row, out_row, scale, residual);
        for (int64_t c = 0; c < d; c++) acc[c] = acc1[c] = splat(0.0f);
        for (int64_t j = 0; j < n; j++) {
            const float *kj = k + j * in_row, *vj = v + j * in_row;
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
        for (int64_t b = 0; b < 2; b++) {  /* dq = scale * sum_j ds k_j (+ g through the residual) */
            const vf *a = b ? acc1 : acc;
            for (int64_t l = 0, i = i0 + b * LANES; l < LANES && i < n; l++, i++)
                for (int64_t c = 0; c < d; c++)
                    dq[i * in_row + c] = a[c][l] * scale + (residual ? g[i * out_row + c] : 0.0f);
        }
    }
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < d; c++) {
            dk[j * in_row + c] = hsum(dkacc[j * d + c]);
            dv[j * in_row + c] = hsum(dvacc[j * d + c]);
        }
}

/* One call's tensors and sizes; each work item is one (network, head) pair bh = b * H + h. */
typedef struct {
    const float *qkv, *o, *g, *lse_in;
    float *out, *lse, *dqkv;
    int64_t B, n, H, d;
    float scale;
    int residual;
} job;

static void forward_item(const job *a, int64_t bh, vf *buf) {
    const int64_t n = a->n, d = a->d, F = a->H * d, in_row = 3 * F, h = bh % a->H;
    const float *q = a->qkv + (bh / a->H) * n * in_row + h * d;
    float *out = a->out + (bh / a->H) * n * F + h * d, *lse = a->lse + bh * n;
    vf *qt = buf, *acc = buf + d, *s = buf + 2 * d;
#define WSB_FORWARD(D) forward_head(q, q + F, q + 2 * F, out, lse, n, d, in_row, F, a->scale, a->residual, qt, acc, s, D)
    if (d == 4) WSB_FORWARD(4);
    else if (d == 8) WSB_FORWARD(8);
    else WSB_FORWARD(0);
#undef WSB_FORWARD
}

static void backward_item(const job *a, int64_t bh, vf *buf) {
    const int64_t n = a->n, d = a->d, F = a->H * d, in_row = 3 * F, h = bh % a->H;
    const int64_t in_base = (bh / a->H) * n * in_row + h * d, out_base = (bh / a->H) * n * F + h * d;
    const float *q = a->qkv + in_base, *o = a->o + out_base, *g = a->g + out_base, *lse = a->lse_in + bh * n;
    float *dq = a->dqkv + in_base;
    vf *qt = buf, *gt = buf + 2 * d, *acc = buf + 4 * d, *dkacc = buf + 6 * d, *dvacc = dkacc + n * d;
#define WSB_BACKWARD(D) backward_head(q, q + F, q + 2 * F, o, lse, g, dq, dq + F, dq + 2 * F, n, d, in_row, F, \
                                      a->scale, a->residual, qt, gt, acc, dkacc, dvacc, D)
    if (d == 4) WSB_BACKWARD(4);
    else if (d == 8) WSB_BACKWARD(8);
    else WSB_BACKWARD(0);
#undef WSB_BACKWARD
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

int wsb_set_attention_forward(const float *qkv, float *out, float *lse, int64_t B, int64_t n, int64_t H, int64_t d,
                              float scale, int residual) {
    const job a = {.qkv = qkv, .out = out, .lse = lse, .B = B, .n = n, .H = H, .d = d, .scale = scale,
                   .residual = residual};
    return run_items(&a, 2 * d + n, forward_item);
}

/* o: the forward output, g: its gradient. Writes the packed gradient of qkv. */
int wsb_set_attention_backward(const float *qkv, const float *o, const float *lse, const float *g, float *dqkv,
                               int64_t B, int64_t n, int64_t H, int64_t d, float scale, int residual) {
    const job a = {.qkv = qkv, .o = o, .g = g, .lse_in = lse, .dqkv = dqkv, .B = B, .n = n, .H = H, .d = d,
                   .scale = scale, .residual = residual};
    return run_items(&a, 6 * d + 2 * n * d, backward_item);
}
