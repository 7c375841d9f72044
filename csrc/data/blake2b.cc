// BLAKE2b compression and padding exactly as RFC 7693, section 3 (little-endian words,
// 12 rounds, the SIGMA schedule, rotations 32/24/16/63).
#include "data/blake2b.h"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CODEGEN_B2B_MANY_AVX512 1
#endif
#include <stdexcept>
#include <string>

namespace codegen::data {
namespace {

constexpr uint64_t kIv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};

constexpr uint8_t kSigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

inline uint64_t Rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

inline uint64_t Load64(const uint8_t* p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
#else
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];  // little-endian on any host
  return v;
#endif
}

#define CODEGEN_B2B_G(a, b, c, d, x, y) \
  do {                                  \
    v[a] = v[a] + v[b] + (x);           \
    v[d] = Rotr(v[d] ^ v[a], 32);       \
    v[c] = v[c] + v[d];                 \
    v[b] = Rotr(v[b] ^ v[c], 24);       \
    v[a] = v[a] + v[b] + (y);           \
    v[d] = Rotr(v[d] ^ v[a], 16);       \
    v[c] = v[c] + v[d];                 \
    v[b] = Rotr(v[b] ^ v[c], 63);       \
  } while (0)

// Compresses one 128-byte block; `t` is the byte count so far including this block.
void Compress(uint64_t h[8], const uint8_t block[128], uint64_t t, bool last) {
  uint64_t m[16];
  for (int i = 0; i < 16; ++i) m[i] = Load64(block + 8 * i);
  uint64_t v[16];
  for (int i = 0; i < 8; ++i) {
    v[i] = h[i];
    v[i + 8] = kIv[i];
  }
  v[12] ^= t;  // the high word of the 128-bit counter stays 0: inputs are < 2^64 bytes
  if (last) v[14] = ~v[14];
  // Rounds spelled out with constant schedule indices, so m[] and v[] live in registers.
#define CODEGEN_B2B_ROUND(r)                                           \
  do {                                                                 \
    CODEGEN_B2B_G(0, 4, 8, 12, m[kSigma[r][0]], m[kSigma[r][1]]);     \
    CODEGEN_B2B_G(1, 5, 9, 13, m[kSigma[r][2]], m[kSigma[r][3]]);     \
    CODEGEN_B2B_G(2, 6, 10, 14, m[kSigma[r][4]], m[kSigma[r][5]]);    \
    CODEGEN_B2B_G(3, 7, 11, 15, m[kSigma[r][6]], m[kSigma[r][7]]);    \
    CODEGEN_B2B_G(0, 5, 10, 15, m[kSigma[r][8]], m[kSigma[r][9]]);    \
    CODEGEN_B2B_G(1, 6, 11, 12, m[kSigma[r][10]], m[kSigma[r][11]]);  \
    CODEGEN_B2B_G(2, 7, 8, 13, m[kSigma[r][12]], m[kSigma[r][13]]);   \
    CODEGEN_B2B_G(3, 4, 9, 14, m[kSigma[r][14]], m[kSigma[r][15]]);   \
  } while (0)
  CODEGEN_B2B_ROUND(0);
  CODEGEN_B2B_ROUND(1);
  CODEGEN_B2B_ROUND(2);
  CODEGEN_B2B_ROUND(3);
  CODEGEN_B2B_ROUND(4);
  CODEGEN_B2B_ROUND(5);
  CODEGEN_B2B_ROUND(6);
  CODEGEN_B2B_ROUND(7);
  CODEGEN_B2B_ROUND(8);
  CODEGEN_B2B_ROUND(9);
  CODEGEN_B2B_ROUND(10);
  CODEGEN_B2B_ROUND(11);
#undef CODEGEN_B2B_ROUND
  for (int i = 0; i < 8; ++i) h[i] ^= v[i] ^ v[i + 8];
}

#undef CODEGEN_B2B_G

void CheckDigestSize(size_t digest_size) {
  if (digest_size < 1 || digest_size > 64) {
    throw std::invalid_argument("BLAKE2b digest size must be in [1, 64], got " +
                                std::to_string(digest_size));
  }
}

#if defined(CODEGEN_B2B_MANY_AVX512)
#define CODEGEN_AVX512 __attribute__((target("avx512f")))
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_epi32(), which its flow analysis
// reports as "may be used uninitialized"; they are not.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// Eight messages in the eight 64-bit lanes of zmm registers: v[i] holds state word i of
// every lane, m[j] message word j of every lane's current block (gathered). A lane whose
// message ends takes the next message; lanes with none left hash a dummy block.
CODEGEN_AVX512 void ManyAvx512(const std::string_view* messages, size_t n, size_t digest_size,
                               uint8_t* out) {
  constexpr int kLanes = 8;
  struct Lane {
    size_t message = 0;
    const uint8_t* p = nullptr;
    size_t left = 0;
    uint64_t t = 0;
    bool active = false;
  };
  alignas(64) uint64_t h[8][kLanes];
  alignas(64) uint8_t pad[kLanes][128] = {};  // also the dummy block of idle lanes
  alignas(64) int64_t address[kLanes];
  alignas(64) uint64_t counter[kLanes], final_flag[kLanes];
  Lane lanes[kLanes];
  size_t next = 0;
  int active = 0;
  auto take = [&](int lane) {
    if (next == n) {
      lanes[lane].active = false;
      return;
    }
    lanes[lane] = {next, reinterpret_cast<const uint8_t*>(messages[next].data()),
                   messages[next].size(), 0, true};
    for (int i = 0; i < 8; ++i) h[i][lane] = kIv[i];
    h[0][lane] ^= 0x01010000ULL ^ static_cast<uint64_t>(digest_size);
    ++next;
    ++active;
  };
  for (int lane = 0; lane < kLanes; ++lane) take(lane);
  while (active > 0) {
    for (int lane = 0; lane < kLanes; ++lane) {
      Lane& ln = lanes[lane];
      final_flag[lane] = 0;
      if (!ln.active) {
        address[lane] = reinterpret_cast<int64_t>(pad[lane]);  // a dummy block
        counter[lane] = 0;
      } else if (ln.left > 128) {
        address[lane] = reinterpret_cast<int64_t>(ln.p);
        ln.t += 128;
        counter[lane] = ln.t;
      } else {  // the last block, zero-padded, with the final flag
        std::memset(pad[lane], 0, 128);
        if (ln.left > 0) std::memcpy(pad[lane], ln.p, ln.left);
        address[lane] = reinterpret_cast<int64_t>(pad[lane]);
        ln.t += ln.left;
        counter[lane] = ln.t;
        final_flag[lane] = ~uint64_t{0};
      }
    }
    const __m512i base = _mm512_load_si512(address);
    __m512i m[16];
    for (int j = 0; j < 16; ++j) {
      m[j] = _mm512_i64gather_epi64(_mm512_add_epi64(base, _mm512_set1_epi64(8 * j)), nullptr,
                                    1);
    }
    __m512i v[16];
    for (int i = 0; i < 8; ++i) {
      v[i] = _mm512_load_si512(h[i]);
      v[i + 8] = _mm512_set1_epi64(static_cast<int64_t>(kIv[i]));
    }
    v[12] = _mm512_xor_si512(v[12], _mm512_load_si512(counter));
    v[14] = _mm512_xor_si512(v[14], _mm512_load_si512(final_flag));
#define CODEGEN_B2B_VG(a, b, c, d, x, y)                                  \
  do {                                                                  \
    v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), (x));         \
    v[d] = _mm512_ror_epi64(_mm512_xor_si512(v[d], v[a]), 32);          \
    v[c] = _mm512_add_epi64(v[c], v[d]);                                \
    v[b] = _mm512_ror_epi64(_mm512_xor_si512(v[b], v[c]), 24);          \
    v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), (y));         \
    v[d] = _mm512_ror_epi64(_mm512_xor_si512(v[d], v[a]), 16);          \
    v[c] = _mm512_add_epi64(v[c], v[d]);                                \
    v[b] = _mm512_ror_epi64(_mm512_xor_si512(v[b], v[c]), 63);          \
  } while (0)
#define CODEGEN_B2B_VROUND(r)                                              \
  do {                                                                     \
    CODEGEN_B2B_VG(0, 4, 8, 12, m[kSigma[r][0]], m[kSigma[r][1]]);        \
    CODEGEN_B2B_VG(1, 5, 9, 13, m[kSigma[r][2]], m[kSigma[r][3]]);        \
    CODEGEN_B2B_VG(2, 6, 10, 14, m[kSigma[r][4]], m[kSigma[r][5]]);       \
    CODEGEN_B2B_VG(3, 7, 11, 15, m[kSigma[r][6]], m[kSigma[r][7]]);       \
    CODEGEN_B2B_VG(0, 5, 10, 15, m[kSigma[r][8]], m[kSigma[r][9]]);       \
    CODEGEN_B2B_VG(1, 6, 11, 12, m[kSigma[r][10]], m[kSigma[r][11]]);     \
    CODEGEN_B2B_VG(2, 7, 8, 13, m[kSigma[r][12]], m[kSigma[r][13]]);      \
    CODEGEN_B2B_VG(3, 4, 9, 14, m[kSigma[r][14]], m[kSigma[r][15]]);      \
  } while (0)
    CODEGEN_B2B_VROUND(0);
    CODEGEN_B2B_VROUND(1);
    CODEGEN_B2B_VROUND(2);
    CODEGEN_B2B_VROUND(3);
    CODEGEN_B2B_VROUND(4);
    CODEGEN_B2B_VROUND(5);
    CODEGEN_B2B_VROUND(6);
    CODEGEN_B2B_VROUND(7);
    CODEGEN_B2B_VROUND(8);
    CODEGEN_B2B_VROUND(9);
    CODEGEN_B2B_VROUND(10);
    CODEGEN_B2B_VROUND(11);
#undef CODEGEN_B2B_VROUND
#undef CODEGEN_B2B_VG
    for (int i = 0; i < 8; ++i) {
      _mm512_store_si512(h[i], _mm512_xor_si512(_mm512_load_si512(h[i]),
                                                _mm512_xor_si512(v[i], v[i + 8])));
    }
    for (int lane = 0; lane < kLanes; ++lane) {
      Lane& ln = lanes[lane];
      if (!ln.active) continue;
      if (final_flag[lane] == 0) {
        ln.p += 128;
        ln.left -= 128;
        continue;
      }
      uint8_t* digest = out + ln.message * digest_size;
      for (size_t i = 0; i < digest_size; ++i) {
        digest[i] = static_cast<uint8_t>(h[i / 8][lane] >> (8 * (i % 8)));
      }
      --active;
      take(lane);
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace

void Blake2b(std::string_view data, size_t digest_size, uint8_t* out) {
  CheckDigestSize(digest_size);
  uint64_t h[8];
  for (int i = 0; i < 8; ++i) h[i] = kIv[i];
  h[0] ^= 0x01010000ULL ^ static_cast<uint64_t>(digest_size);  // no key, fanout 1, depth 1
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t left = data.size();
  uint64_t t = 0;
  while (left > 128) {  // the last block (full or not) is compressed with the final flag
    t += 128;
    Compress(h, p, t, false);
    p += 128;
    left -= 128;
  }
  uint8_t block[128] = {0};
  if (left > 0) std::memcpy(block, p, left);
  t += left;
  Compress(h, block, t, true);
  for (size_t i = 0; i < digest_size; ++i) {
    out[i] = static_cast<uint8_t>(h[i / 8] >> (8 * (i % 8)));
  }
}

void Blake2bManyPortable(const std::string_view* messages, size_t n, size_t digest_size,
                         uint8_t* out) {
  CheckDigestSize(digest_size);
  for (size_t i = 0; i < n; ++i) Blake2b(messages[i], digest_size, out + i * digest_size);
}

bool Blake2bManyUsesAvx512() {
#if defined(CODEGEN_B2B_MANY_AVX512)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512;
#else
  return false;
#endif
}

void Blake2bMany(const std::string_view* messages, size_t n, size_t digest_size, uint8_t* out) {
  CheckDigestSize(digest_size);
#if defined(CODEGEN_B2B_MANY_AVX512)
  if (n > 1 && Blake2bManyUsesAvx512()) {
    ManyAvx512(messages, n, digest_size, out);
    return;
  }
#endif
  Blake2bManyPortable(messages, n, digest_size, out);
}

}  // namespace codegen::data
