/*
 * Weight decoding and re-encoding for the sparse delegate.
 *
 * edge_sparse_decode() is a generic decoder of TFLite's sparse tensor format (any traversal order,
 * any block map, DENSE and CSR levels, rank <= 8).  It validates every index it follows against the
 * tensor's own arrays, so malformed metadata is reported and the node declined instead of crashing.
 * edge_pack() re-encodes dense weights into the layout a kernel wants (edge_kernels.h).
 */
#include "pack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANK 8
#define MAX_LEVELS 16

typedef struct Decoder {
  const EdgeSparsity* s;
  const uint8_t* values;
  int64_t nvalues;
  int64_t next; /* leaves visited so far: where the next value is in traversal order */
  int es;
  int rank, levels;
  const int* dims;
  int expanded[MAX_LEVELS]; /* size of each expanded dimension (original outer sizes, then blocks) */
  int block_of[MAX_RANK];   /* original dim -> block dimension index, or -1 */
  int coord[MAX_LEVELS];
  uint8_t* out;
  char* err;
  size_t errlen;
} Decoder;

static int fail(Decoder* d, const char* msg) {
  snprintf(d->err, d->errlen, "malformed sparsity metadata: %s", msg);
  return -1;
}

static int walk(Decoder* d, int level, int64_t pos) {
  if (level == d->levels) {
    if (pos < 0 || pos >= d->nvalues) return fail(d, "value index out of range");
    /* TFLite's DENSIFY takes the values one after another in traversal order, whatever the
     * segments say; in a well-formed tensor that is the position reached through the segments.
     * Segments that do not start at 0 or that skip or repeat values make the two disagree. */
    if (pos != d->next++) return fail(d, "segments skip or repeat values");
    int64_t flat = 0;
    const uint8_t* v = d->values + pos * d->es;
    int nonzero = 0;
    for (int b = 0; b < d->es; b++) nonzero |= v[b];
    for (int i = 0; i < d->rank; i++) {
      int64_t c = d->coord[i];
      const int b = d->block_of[i];
      if (b >= 0) c = c * d->expanded[d->rank + b] + d->coord[d->rank + b];
      if (c >= d->dims[i]) {
        if (nonzero) return fail(d, "non-zero value outside the dense shape");
        return 0;
      }
      flat = flat * d->dims[i] + c;
    }
    memcpy(d->out + flat * d->es, v, (size_t)d->es);
    return 0;
  }
  const EdgeDimensionMetadata* md = &d->s->dim_metadata[level];
  const int t = d->s->traversal_order->data[level];
  if (md->format == eDimDense) {
    const int n = md->dense_size;
    for (int i = 0; i < n; i++) {
      d->coord[t] = i;
      if (walk(d, level + 1, pos * n + i) != 0) return -1;
    }
    return 0;
  }
  if (md->format != eDimSparseCSR) return fail(d, "unknown dimension format");
  const EdgeIntArray* seg = md->array_segments;
  const EdgeIntArray* ind = md->array_indices;
  if (!seg || !ind) return fail(d, "CSR level without segments or indices");
  if (pos < 0 || pos + 1 >= seg->size) return fail(d, "segment index out of range");
  const int s0 = seg->data[pos], s1 = seg->data[pos + 1];
  if (s0 < 0 || s1 < s0 || s1 > ind->size) return fail(d, "segments not monotone or beyond indices");
  for (int p = s0; p < s1; p++) {
    const int c = ind->data[p];
    if (c < 0 || c >= d->expanded[t]) return fail(d, "CSR index out of range");
    /* a repeated index is overwritten by DENSIFY but added twice by the sparse FC kernels */
    if (p > s0 && c <= ind->data[p - 1]) return fail(d, "CSR indices not increasing within a segment");
    d->coord[t] = c;
    if (walk(d, level + 1, p) != 0) return -1;
  }
  return 0;
}

int edge_sparse_decode(const EdgeSparsity* s, const void* values, size_t value_bytes, int es, const int* dims,
                       int rank, void* out, char* err, size_t errlen) {
  Decoder d;
  memset(&d, 0, sizeof(d));
  d.s = s;
  d.values = (const uint8_t*)values;
  d.es = es;
  d.nvalues = (int64_t)(value_bytes / (size_t)es);
  d.rank = rank;
  d.dims = dims;
  d.out = (uint8_t*)out;
  d.err = err;
  d.errlen = errlen;
  if (!s || !s->traversal_order || !s->dim_metadata || !values) return fail(&d, "missing arrays");
  if (rank < 1 || rank > MAX_RANK) return fail(&d, "rank not in 1..8");
  const int L = s->traversal_order->size;
  if (L < rank || L > MAX_LEVELS || s->dim_metadata_size != L) return fail(&d, "level count");
  d.levels = L;
  const int nb = L - rank;
  if (nb > 0 && (!s->block_map || s->block_map->size != nb)) return fail(&d, "block map size");
  int seen[MAX_LEVELS] = {0};
  for (int j = 0; j < L; j++) {
    const int t = s->traversal_order->data[j];
    if (t < 0 || t >= L || seen[t]) return fail(&d, "traversal order is not a permutation");
    seen[t] = 1;
  }
  for (int i = 0; i < rank; i++) d.block_of[i] = -1;
  for (int b = 0; b < nb; b++) {
    const int od = s->block_map->data[b];
    if (od < 0 || od >= rank || d.block_of[od] >= 0) return fail(&d, "block map entry");
    /* TFLite's own densify code reads non-ascending block maps differently from the format's
     * description; the converter never writes them, so they are declined rather than guessed. */
    if (b > 0 && od <= s->block_map->data[b - 1]) return fail(&d, "block map not ascending");
    d.block_of[od] = b;
  }
  for (int i = 0; i < rank; i++)
    if (dims[i] <= 0) return fail(&d, "empty dense dimension");
  /* block sizes come from the (dense) block levels */
  for (int j = 0; j < L; j++) {
    const int t = s->traversal_order->data[j];
    if (t >= rank) {
      if (s->dim_metadata[j].format != eDimDense) return fail(&d, "block level is not dense");
      const int bs = s->dim_metadata[j].dense_size;
      const int od = s->block_map->data[t - rank];
      if (bs < 1 || bs > dims[od]) return fail(&d, "block size");
      d.expanded[t] = bs;
    }
  }
  for (int i = 0; i < rank; i++) {
    const int b = d.block_of[i];
    d.expanded[i] = b >= 0 ? (dims[i] + d.expanded[rank + b] - 1) / d.expanded[rank + b] : dims[i];
  }
  for (int j = 0; j < L; j++) {
    const EdgeDimensionMetadata* md = &s->dim_metadata[j];
    const int t = s->traversal_order->data[j];
    /* a smaller size leaves rows out for DENSIFY, while the sparse FC kernels take the rows from
     * the weight shape: the runtime reads it two ways */
    if (md->format == eDimDense && md->dense_size != d.expanded[t])
      return fail(&d, "dense level size differs from the weight shape");
  }
  int64_t total = (int64_t)es;
  for (int i = 0; i < rank; i++) total *= dims[i];
  memset(out, 0, (size_t)total);
  return walk(&d, 0, 0);
}

/* ---- quantization helpers (TFLite's arithmetic) ---- */

void edge_quantize_multiplier(double m, int32_t* q, int* shift) {
  if (m == 0.0) {
    *q = 0;
    *shift = 0;
    return;
  }
  int sh = 0;
  const double f = frexp(m, &sh);
  int64_t qf = (int64_t)llround(f * (double)(1LL << 31));
  if (qf == (1LL << 31)) {
    qf /= 2;
    sh++;
  }
  if (sh < -31) {
    sh = 0;
    qf = 0;
  }
  if (sh > 30) {
    sh = 30;
    qf = (1LL << 31) - 1;
  }
  *q = (int32_t)qf;
  *shift = sh;
}

/* Why the fusion is exact (b = mult >= 0, x = SRDHM(a, b) = floor((P + 2^30) / 2^31), P = a * b; see
 * srdhm16 in kernels_avx512.c): the rounding right shift by r >= 1 is floor((x + 2^(r-1)) / 2^r)
 * for ties toward +inf, and floor((x + 2^(r-1) - 1) / 2^r) for ties away from zero when x < 0;
 * x < 0 exactly when P < -2^30.  Since floor(floor(X) / n) = floor(X / n) for whole n, and adding
 * the zero point z commutes with the floor, y = floor((P + 2^30 + 2^(30+r) + z * 2^(31+r)) / 2^(31+r))
 * (less 2^31 in the numerator for the away case); the constant is 2^30 + (2z + 1) * 2^(30+r), which
 * the kernel forms from 31 + r (one byte per channel, so the epilogue reads 16 bytes of shifts per
 * panel instead of 64 bytes of shifts and 128 of constants).  r <= 22 keeps it within 62 bits, and
 * r >= 1 keeps |y| <= 2^30, so the int32 zero-point addition cannot wrap in TFLite either.
 * Returns 0 (e->fused set or left 0) or -1 when out of memory. */
int edge_epilogue_fuse(EdgeEpilogue* e, int N, uint8_t** sh_out) {
  *sh_out = NULL;
  e->fused = 0;
  if (e->rmode == EDGE_ROUND_SINGLE || N <= 0) return 0;
  for (int n = 0; n < N; n++)
    if (e->lshift[n] != 0 || e->rshift[n] < 1 || e->rshift[n] > 22) return 0;
  const size_t Np = ((size_t)N + 15) & ~(size_t)15;
  uint8_t* sh = (uint8_t*)aligned_alloc(64, (Np + 63) & ~(size_t)63);
  if (!sh) return -1;
  for (size_t n = 0; n < Np; n++) sh[n] = (uint8_t)(31 + (n < (size_t)N ? e->rshift[n] : 1));
  e->fsh = sh;
  e->fused = 1;
  *sh_out = sh;
  return 0;
}

/* ---- packing ---- */

static void* amalloc(size_t bytes) {
  size_t n = (bytes + 63) & ~(size_t)63;
  if (n == 0) n = 64;
  void* p = aligned_alloc(64, n);
  if (p) memset(p, 0, n);
  return p;
}

void edge_packed_free(EdgePacked* p) {
  free(p->ptr);
  free(p->idx);
  free(p->idx16);
  free(p->w);
  free(p->s_cnt);
  free(p->s_pan);
  free(p->s_col);
  free(p->s_w);
  memset(p, 0, sizeof(*p));
}

static inline int is_nz(const void* w, int dtype, size_t i) {
  return dtype == EDGE_F32 ? ((const float*)w)[i] != 0.f : ((const int8_t*)w)[i] != 0;
}

/* anchor of column group g of width bw: aligned, except the tail which ends at K-1 */
static inline int group_start(int g, int bw, int K) {
  const int k0 = g * bw;
  return k0 + bw > K ? K - bw : k0;
}

int edge_layout_applicable(int layout, int dtype, int K) {
  switch (layout) {
    case EDGE_LAYOUT_DENSE:
      return dtype == EDGE_F32 || K >= 4;
    case EDGE_LAYOUT_CSR:
      return 1;
    case EDGE_LAYOUT_1X16:
      return K >= 16;
    case EDGE_LAYOUT_16X1:
      return dtype == EDGE_F32;
    case EDGE_LAYOUT_16X4:
      return K >= 4;
    default:
      return 0;
  }
}

int edge_pack(const void* w, int dtype, int N, int K, int layout, EdgePacked* p) {
  memset(p, 0, sizeof(*p));
  p->layout = layout;
  p->dtype = dtype;
  p->N = N;
  p->K = K;
  const size_t es = dtype == EDGE_F32 ? 4 : 1;
  if (!edge_layout_applicable(layout, dtype, K)) return -1;
  if (layout == EDGE_LAYOUT_CSR || layout == EDGE_LAYOUT_1X16) {
    const int bw = layout == EDGE_LAYOUT_CSR ? 1 : 16;
    const int ng = (K + bw - 1) / bw;
    p->kb = bw;
    p->ptr = (int32_t*)calloc((size_t)N + 1, sizeof(int32_t));
    size_t nb = 0;
    if (!p->ptr) return -1;
    for (int n = 0; n < N; n++) {
      for (int g = 0; g < ng; g++) {
        int any = 0;
        for (int c = g * bw; c < g * bw + bw && c < K; c++) any |= is_nz(w, dtype, (size_t)n * K + c);
        nb += any;
      }
      p->ptr[n + 1] = (int32_t)nb;
    }
    p->nblocks = nb;
    p->idx = (int32_t*)malloc((nb ? nb : 1) * sizeof(int32_t));
    p->w = amalloc(nb * bw * es);
    if (!p->idx || !p->w) return -1;
    size_t b = 0;
    for (int n = 0; n < N; n++) {
      for (int g = 0; g < ng; g++) {
        int any = 0;
        for (int c = g * bw; c < g * bw + bw && c < K; c++) any |= is_nz(w, dtype, (size_t)n * K + c);
        if (!any) continue;
        const int k0 = group_start(g, bw, K);
        p->idx[b] = k0;
        for (int c = g * bw; c < g * bw + bw && c < K; c++)
          memcpy((uint8_t*)p->w + (b * bw + (size_t)(c - k0)) * es, (const uint8_t*)w + ((size_t)n * K + c) * es, es);
        b++;
      }
    }
    return 0;
  }
  /* panel layouts: 16 output rows x kb columns */
  const int kb = layout == EDGE_LAYOUT_16X1 ? 1 : (layout == EDGE_LAYOUT_16X4 ? 4 : (dtype == EDGE_F32 ? 1 : 4));
  const int dense = layout == EDGE_LAYOUT_DENSE;
  const int ng = (K + kb - 1) / kb;
  const int np = (N + 15) / 16;
  p->kb = kb;
  p->npanels = np;
  p->ptr = (int32_t*)calloc((size_t)np + 1, sizeof(int32_t));
  if (!p->ptr) return -1;
  size_t nb = 0;
  for (int pn = 0; pn < np; pn++) {
    for (int g = 0; g < ng; g++) {
      int any = dense;
      for (int r = pn * 16; r < pn * 16 + 16 && r < N && !any; r++)
        for (int c = g * kb; c < g * kb + kb && c < K; c++) any |= is_nz(w, dtype, (size_t)r * K + c);
      nb += any;
    }
    p->ptr[pn + 1] = (int32_t)nb;
  }
  p->nblocks = nb;
  p->idx = (int32_t*)malloc((nb ? nb : 1) * sizeof(int32_t));
  p->w = amalloc(nb * 16 * kb * es);
  if (!p->idx || !p->w) return -1;
  size_t b = 0;
  for (int pn = 0; pn < np; pn++) {
    for (int g = 0; g < ng; g++) {
      int any = dense;
      for (int r = pn * 16; r < pn * 16 + 16 && r < N && !any; r++)
        for (int c = g * kb; c < g * kb + kb && c < K; c++) any |= is_nz(w, dtype, (size_t)r * K + c);
      if (!any) continue;
      const int k0 = group_start(g, kb, K);
      p->idx[b] = k0;
      for (int r = pn * 16; r < pn * 16 + 16 && r < N; r++) {
        const int j = r - pn * 16;
        for (int c = g * kb; c < g * kb + kb && c < K; c++) {
          const int kk = c - k0;
          /* f32: [kk][16 rows]; int8: [row][4 columns] (one vpdpbusd lane per row) */
          const size_t off = dtype == EDGE_F32 ? (size_t)kk * 16 + j : (size_t)j * 4 + kk;
          memcpy((uint8_t*)p->w + (b * 16 * kb + off) * es, (const uint8_t*)w + ((size_t)r * K + c) * es, es);
        }
      }
      b++;
    }
  }
  if (dtype == EDGE_F32 && kb == 1 && K <= 65536) {
    p->idx16 = (uint16_t*)malloc((nb ? nb : 1) * sizeof(uint16_t));
    if (!p->idx16) return -1;
    for (size_t i = 0; i < nb; i++) p->idx16[i] = (uint16_t)p->idx[i];
  }
  if (layout == EDGE_LAYOUT_16X4 && dtype == EDGE_I8 && K <= EDGE_STREAM_MAX_K) {
    /* groups of four panels with similar block counts: panels sorted by count (descending, stable),
     * so padding each group to its longest panel adds few zero blocks; the last group holds the
     * np % 4 smallest panels when np is not a multiple of four */
    const int ngr = (np + 3) / 4;
    size_t ne = 0;
    p->s_ngroups = ngr;
    p->s_cnt = (int32_t*)calloc((size_t)ngr + 1, sizeof(int32_t));
    p->s_pan = (int32_t*)malloc(((size_t)np + 1) * sizeof(int32_t));
    if (!p->s_cnt || !p->s_pan) return -1;
    for (int i = 0; i < np; i++) {
      const int32_t ci = p->ptr[i + 1] - p->ptr[i];
      int j = i;
      for (; j > 0 && p->ptr[p->s_pan[j - 1] + 1] - p->ptr[p->s_pan[j - 1]] < ci; j--) p->s_pan[j] = p->s_pan[j - 1];
      p->s_pan[j] = i;
    }
    for (int g = 0; g < ngr; g++) {
      const int pn = p->s_pan[4 * g], gs = np - 4 * g < 4 ? np - 4 * g : 4;
      p->s_cnt[g] = p->ptr[pn + 1] - p->ptr[pn];
      ne += (size_t)gs * p->s_cnt[g];
    }
    p->s_col = (uint16_t*)calloc(ne ? ne : 1, sizeof(uint16_t));
    p->s_w = amalloc(ne * 64); /* zeroed: padding blocks contribute nothing */
    if (!p->s_col || !p->s_w) return -1;
    size_t e = 0;
    for (int g = 0; g < ngr; g++) {
      const int gs = np - 4 * g < 4 ? np - 4 * g : 4;
      for (int j = 0; j < p->s_cnt[g]; j++) {
        for (int u = 0; u < gs; u++, e++) {
          const int pn = p->s_pan[4 * g + u];
          if (j >= p->ptr[pn + 1] - p->ptr[pn]) continue; /* column 0, zero weights */
          const size_t src = (size_t)p->ptr[pn] + (size_t)j;
          p->s_col[e] = (uint16_t)p->idx[src];
          memcpy((int8_t*)p->s_w + e * 64, (const int8_t*)p->w + src * 64, 64);
        }
      }
    }
  }
  return 0;
}
