// Philox4x32-10 and the normals drawn from it: the CUDA C twin of philox.py, which states it in NumPy
// (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3", Sec. 3; Box & Muller 1958).
// random.cu's kernels call these functions; the same text compiles as host C++ (g++), which is how
// tests/test_philox.py checks it against philox.py bit for bit without a GPU.
//
// The generator's state is six 32-bit words: key0, key1, counter0 (lowest) .. counter3.
// Call t of a draw computes philox4x32_10(counter + t, key); its four words give four float32 normals
// (two Box-Muller pairs) or two float64 ones (one pair).
#ifndef MINIVAE_PHILOX_CUH
#define MINIVAE_PHILOX_CUH

#ifdef __CUDACC__
#define MV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#include <math.h>
#define MV_HOST_DEVICE inline
#endif

struct mv_words4 {
    unsigned int v[4];
};

// The high and low 32-bit halves of a * b.
MV_HOST_DEVICE unsigned int mv_mulhilo(unsigned int a, unsigned int b, unsigned int* hi) {
    unsigned long long product = (unsigned long long)a * b;
    *hi = (unsigned int)(product >> 32);
    return (unsigned int)product;
}

// Ten rounds of (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
// the key bumped by (W0, W1) mod 2^32 before every round after the first.
MV_HOST_DEVICE mv_words4 mv_philox4x32_10(mv_words4 c, unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned int hi0, hi1;
        unsigned int lo0 = mv_mulhilo(0xD2511F53u, c.v[0], &hi0);
        unsigned int lo1 = mv_mulhilo(0xCD9E8D57u, c.v[2], &hi1);
        mv_words4 next = {{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
        c = next;
    }
    return c;
}

// counter + t, a 128-bit sum of 32-bit words, lowest first.
MV_HOST_DEVICE mv_words4 mv_counter_plus(const unsigned int* counter, unsigned long long t) {
    mv_words4 sum;
    unsigned long long carry = t;
    for (int i = 0; i < 4; ++i) {
        unsigned long long total = counter[i] + (carry & 0xFFFFFFFFull);
        sum.v[i] = (unsigned int)total;
        carry = (carry >> 32) + (total >> 32);
    }
    return sum;
}

// Uniforms in (0, 1], exact in their type: 1 - (x >> 8) 2^-24, and 1 - ((a << 21) | (b >> 11)) 2^-53.
MV_HOST_DEVICE float mv_uniform_f32(unsigned int x) {
    return 1.0f - (float)(x >> 8) * 0x1p-24f;
}

MV_HOST_DEVICE double mv_uniform_f64(unsigned int a, unsigned int b) {
    return 1.0 - (double)(((unsigned long long)a << 21) | (b >> 11)) * 0x1p-53;
}

// Box-Muller: out[i] = r cos(2 pi u1), out[i + 1] = r sin(2 pi u1), r = sqrt(-2 ln u0); only below n.
MV_HOST_DEVICE void mv_box_muller(float u0, float u1, float* out, long long i, long long n) {
    float r = sqrtf(-2.0f * logf(u0));
    float theta = 6.28318530717958647692f * u1;
    out[i] = r * cosf(theta);
    if (i + 1 < n) out[i + 1] = r * sinf(theta);
}

MV_HOST_DEVICE void mv_box_muller(double u0, double u1, double* out, long long i, long long n) {
    double r = sqrt(-2.0 * log(u0));
    double theta = 6.28318530717958647692 * u1;
    out[i] = r * cos(theta);
    if (i + 1 < n) out[i + 1] = r * sin(theta);
}

// Call t of a draw of n normals from state: out[4t .. 4t + 3] (float32) or out[2t, 2t + 1] (float64).
MV_HOST_DEVICE void mv_philox_normals(const unsigned int* state, unsigned long long t, float* out, long long n) {
    mv_words4 x = mv_philox4x32_10(mv_counter_plus(state + 2, t), state[0], state[1]);
    mv_box_muller(mv_uniform_f32(x.v[0]), mv_uniform_f32(x.v[1]), out, 4 * t, n);
    if (4 * t + 2 < n) mv_box_muller(mv_uniform_f32(x.v[2]), mv_uniform_f32(x.v[3]), out, 4 * t + 2, n);
}

MV_HOST_DEVICE void mv_philox_normals(const unsigned int* state, unsigned long long t, double* out, long long n) {
    mv_words4 x = mv_philox4x32_10(mv_counter_plus(state + 2, t), state[0], state[1]);
    mv_box_muller(mv_uniform_f64(x.v[0], x.v[1]), mv_uniform_f64(x.v[2], x.v[3]), out, 2 * t, n);
}

#endif  // MINIVAE_PHILOX_CUH
