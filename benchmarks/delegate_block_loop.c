/*
 * Hot-loop cost of one stored int8 16x4 block in the sparse delegate's batch-1 inner loop, and of
 * the alternatives considered for its 4-byte input broadcast (AVX-512 VNNI only).  Built and run
 * by benchmarks/delegate_profile.py; prints "name cycles_per_block" lines (TSC cycles, best of
 * many runs over 400 random blocks, eight accumulator chains).
 *
 *   bcast_load   the delegate's form: column index load, vpbroadcastd from memory, vpdpbusd
 *   no_bcast     the same without the broadcast (a lower bound: weights and products only)
 *   gpr_bcast    input bytes to a general register, then broadcast from it
 *   embedded     the input as the signed operand with an EVEX {1to16} memory broadcast
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NB 400
static int8_t W[NB * 64] __attribute__((aligned(64)));
static int32_t col[NB];
static int8_t x[1024] __attribute__((aligned(64)));

static inline __m512i bcast(const int8_t* p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

static __m512i sum8(__m512i* a) {
  for (int i = 1; i < 8; i++) a[0] = _mm512_add_epi32(a[0], a[i]);
  return a[0];
}

__attribute__((noinline)) static __m512i bcast_load(void) {
  __m512i a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_si512();
  for (int j = 0; j < NB; j += 8)
    for (int u = 0; u < 8; u++)
      a[u] = _mm512_dpbusd_epi32(a[u], bcast(x + col[j + u]), _mm512_load_si512(W + 64 * (j + u)));
  return sum8(a);
}

__attribute__((noinline)) static __m512i no_bcast(void) {
  __m512i a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_si512();
  const __m512i xb = bcast(x);
  for (int j = 0; j < NB; j += 8)
    for (int u = 0; u < 8; u++) a[u] = _mm512_dpbusd_epi32(a[u], xb, _mm512_load_si512(W + 64 * (j + u)));
  return sum8(a);
}

__attribute__((noinline)) static __m512i gpr_bcast(void) {
  __m512i a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_si512();
  for (int j = 0; j < NB; j += 8)
    for (int u = 0; u < 8; u++) {
      int32_t v;
      memcpy(&v, x + col[j + u], 4);
      __asm__ volatile("" : "+r"(v)); /* keep it in a general register */
      a[u] = _mm512_dpbusd_epi32(a[u], _mm512_set1_epi32(v), _mm512_load_si512(W + 64 * (j + u)));
    }
  return sum8(a);
}

__attribute__((noinline)) static __m512i embedded(void) {
  __m512i a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_si512();
  for (int j = 0; j < NB; j += 8)
    for (int u = 0; u < 8; u++) {
      const int32_t* xp = (const int32_t*)(const void*)(x + col[j + u]);
      const __m512i w = _mm512_load_si512(W + 64 * (j + u));
      __asm__("vpdpbusd %1%{1to16%}, %2, %0" : "+v"(a[u]) : "m"(*xp), "v"(w));
    }
  return sum8(a);
}

int main(void) {
  srand(1);
  for (int i = 0; i < NB * 64; i++) W[i] = (int8_t)rand();
  for (int i = 0; i < 1024; i++) x[i] = (int8_t)rand();
  for (int i = 0; i < NB; i++) col[i] = (rand() % 196) * 4; /* 784 inputs, as LeNet's first layer */
  const char* names[] = {"bcast_load", "no_bcast", "gpr_bcast", "embedded"};
  __m512i (*fns[])(void) = {bcast_load, no_bcast, gpr_bcast, embedded};
  volatile int sink = 0;
  for (int v = 0; v < 4; v++) {
    unsigned long long best = ~0ull;
    for (int t = 0; t < 20000; t++) {
      const unsigned long long t0 = __builtin_ia32_rdtsc();
      const __m512i r = fns[v]();
      const unsigned long long t1 = __builtin_ia32_rdtsc();
      sink += _mm512_reduce_add_epi32(r);
      if (t1 - t0 < best) best = t1 - t0;
    }
    printf("%s %.2f\n", names[v], (double)best / NB);
  }
  return 0;
}
