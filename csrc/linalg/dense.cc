#include "linalg/dense.h"

#include <cstring>
#include <vector>

#include "common/cpu.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define CODEGEN_DENSE_X86 1
#include <immintrin.h>
#else
#define CODEGEN_DENSE_X86 0
#endif

namespace codegen::linalg {

float Bf16ToFloat(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN, sign kept
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);  // to nearest, ties to even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

namespace {

inline float WeightAt(const DenseArgs& a, int64_t row, int64_t col) {
  const int64_t i = row * a.k + col;
  if (a.w_type == WeightType::kF32) return static_cast<const float*>(a.w)[i];
  return Bf16ToFloat(static_cast<const uint16_t*>(a.w)[i]);
}

// Portable path: one output at a time, 8 independent partial sums (auto-vectorisable).
template <typename W, typename Widen>
void DensePortable(const DenseArgs& a, int64_t n_begin, int64_t n_end, Widen widen) {
  const W* w = static_cast<const W*>(a.w);
  for (int64_t j = n_begin; j < n_end; ++j) {
    const W* wr = w + j * a.k;
    for (int64_t i = 0; i < a.m; ++i) {
      const float* xr = a.x + i * a.k;
      float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t c = 0;
      for (; c + 8 <= a.k; c += 8) {
        for (int l = 0; l < 8; ++l) part[l] += xr[c + l] * widen(wr[c + l]);
      }
      float sum = ((part[0] + part[1]) + (part[2] + part[3])) +
                  ((part[4] + part[5]) + (part[6] + part[7]));
      for (; c < a.k; ++c) sum += xr[c] * widen(wr[c]);
      a.y[i * a.n + j] = sum;
    }
  }
}

#if CODEGEN_DENSE_X86
#define CODEGEN_AVX2 __attribute__((target("avx2,fma")))

template <bool kBf16>
CODEGEN_AVX2 inline __m256 LoadW8(const void* w, int64_t offset) {
  if constexpr (kBf16) {
    const __m128i bits =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + offset));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(w) + offset);
  }
}

CODEGEN_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Contraction columns per block: a block of 8 W rows and of every x row (8 KB each for
// fp32 at 8 rows) stays in L1 while all row tiles use it. Streaming whole rows instead makes
// 8-row products bound by L2 bandwidth (measured: half the speed at m = 8, k = 4096).
constexpr int64_t kBlockK = 256;

// One register tile over contraction columns [c0, c1) (multiples of 8): MB rows of x (from
// row i0) times NB rows of W (from row j0), MB * NB vector accumulators carried between
// blocks in part[(i * 8 + j) * 8 + lane] (rows of x by 8 W rows of the current block).
template <int MB, int NB, bool kBf16>
CODEGEN_AVX2 void Tile(const DenseArgs& a, int64_t i0, int64_t j0, int jb, int64_t c0, int64_t c1,
                       float* part) {
  const int64_t k = a.k;
  const float* x = a.x + i0 * k;
  __m256 acc[MB][NB];
  for (int i = 0; i < MB; ++i) {
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_loadu_ps(part + ((i0 + i) * 8 + jb + j) * 8);
  }
  for (int64_t c = c0; c < c1; c += 8) {
    __m256 xv[MB];
    for (int i = 0; i < MB; ++i) {
      xv[i] = _mm256_loadu_ps(x + i * k + c);
      // Keep it in a register: left alone, GCC reloads x from L1 in every FMA (10 loads per
      // 8 FMAs with MB = 4, NB = 2), which made the loop load-bound.
      __asm__("" : "+x"(xv[i]));
    }
    for (int j = 0; j < NB; ++j) {
      const __m256 wv = LoadW8<kBf16>(a.w, (j0 + j) * k + c);
      for (int i = 0; i < MB; ++i) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < MB; ++i) {
    for (int j = 0; j < NB; ++j) _mm256_storeu_ps(part + ((i0 + i) * 8 + jb + j) * 8, acc[i][j]);
  }
}

// With 4+ rows of x the kernel computes long enough per weight byte that the hardware
// prefetcher falls behind; ask for the W block after this one (the next 256 columns of these
// rows, or the first ones of the next rows) while this one is computed. Measured (one thread,
// 8 x 1024 x 1024, weights from DRAM, runs interleaved): 8-row products 15-20% faster with
// the register pinning below; 1-row products (bandwidth bound) slower, so they do not.
template <int NB, bool kBf16>
CODEGEN_AVX2 void PrefetchNextBlock(const DenseArgs& a, int64_t j0, int64_t c1, int64_t k8) {
  constexpr int64_t kElt = kBf16 ? 2 : 4;
  const char* w = static_cast<const char*>(a.w);
  for (int j = 0; j < NB; ++j) {
    const int64_t row = c1 < k8 ? j0 + j : j0 + NB + j;
    if (row >= a.n) return;
    const char* p = w + (row * a.k + (c1 < k8 ? c1 : 0)) * kElt;
    for (int64_t off = 0; off < kBlockK * kElt; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
  }
}

// Every row of x against W rows [j0, j0 + NB) (NB = 8, or 1 for the last rows): the W block
// is read from memory once and reused from L1 by each row tile. part holds m * 64 floats.
template <int NB, bool kBf16>
CODEGEN_AVX2 void RowsAgainst(const DenseArgs& a, int64_t j0, float* part) {
  const int64_t k8 = a.k & ~int64_t{7};
  for (int64_t i = 0; i < a.m * 64; i += 8) _mm256_storeu_ps(part + i, _mm256_setzero_ps());
  for (int64_t c0 = 0; c0 < k8; c0 += kBlockK) {
    const int64_t c1 = c0 + kBlockK < k8 ? c0 + kBlockK : k8;
    if (a.m >= 4) PrefetchNextBlock<NB, kBf16>(a, j0, c1, k8);
    int64_t i = 0;
    if constexpr (NB == 8) {
      for (; i + 4 <= a.m; i += 4) {
        for (int jb = 0; jb < 8; jb += 2) Tile<4, 2, kBf16>(a, i, j0 + jb, jb, c0, c1, part);
      }
    }
    for (; i < a.m; ++i) Tile<1, NB, kBf16>(a, i, j0, 0, c0, c1, part);
  }
  for (int64_t i = 0; i < a.m; ++i) {
    const float* x = a.x + i * a.k;
    for (int j = 0; j < NB; ++j) {
      float sum = HorizontalSum(_mm256_loadu_ps(part + (i * 8 + j) * 8));
      for (int64_t c = k8; c < a.k; ++c) sum += x[c] * WeightAt(a, j0 + j, c);
      a.y[i * a.n + j0 + j] = sum;
    }
  }
}

template <bool kBf16>
CODEGEN_AVX2 void DenseColumnsAvx2(const DenseArgs& a, int64_t n_begin, int64_t n_end) {
  // Vector partial sums: (rows of x) x (8 W rows) x (8 lanes).
  std::vector<float> part_storage(static_cast<size_t>(a.m) * 64);
  float* part = part_storage.data();
  int64_t j = n_begin;
  for (; j + 8 <= n_end; j += 8) RowsAgainst<8, kBf16>(a, j, part);
  for (; j < n_end; ++j) RowsAgainst<1, kBf16>(a, j, part);
}

#endif  // CODEGEN_DENSE_X86

}  // namespace

bool DenseUsesAvx2() {
#if CODEGEN_DENSE_X86
  static const bool has = CpuSupportsAvx2(/*need_fma=*/true);  // set once
  return has;
#else
  return false;
#endif
}

void DenseColumns(const DenseArgs& args, int64_t n_begin, int64_t n_end) {
#if CODEGEN_DENSE_X86
  if (DenseUsesAvx2()) {
    if (args.w_type == WeightType::kF32) {
      DenseColumnsAvx2<false>(args, n_begin, n_end);
    } else {
      DenseColumnsAvx2<true>(args, n_begin, n_end);
    }
    return;
  }
#endif
  DenseColumnsPortable(args, n_begin, n_end);
}

void DenseColumnsPortable(const DenseArgs& a, int64_t n_begin, int64_t n_end) {
  if (a.w_type == WeightType::kF32) {
    DensePortable<float>(a, n_begin, n_end, [](float v) { return v; });
  } else {
    DensePortable<uint16_t>(a, n_begin, n_end, Bf16ToFloat);
  }
}

void DenseReference(const DenseArgs& a) {
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t j = 0; j < a.n; ++j) {
      double sum = 0.0;
      for (int64_t c = 0; c < a.k; ++c) {
        sum += static_cast<double>(a.x[i * a.k + c]) * static_cast<double>(WeightAt(a, j, c));
      }
      a.y[i * a.n + j] = static_cast<float>(sum);
    }
  }
}

}  // namespace codegen::linalg
