// Per-element formulas for the CuPy kernels: the CUDA C twins of shared.py,
// which they mirror line for line (CUDA C cannot compile the Python ones).
// cupy_kernels.py passes this file as the preamble of its ElementwiseKernels
// and ReductionKernels, which instantiate the templates for float or double.
#ifndef MINIVAE_POINTWISE_CU
#define MINIVAE_POINTWISE_CU

// Activation codes: the index of each name in reference.ACTIVATIONS.
#define MV_IDENTITY 0
#define MV_RELU 1
#define MV_TANH 2
#define MV_SIGMOID 3

// act(t); sigmoid(t) = 1 / (1 + e^-t), written with e = e^-|t| <= 1 so nothing overflows.
template <typename T>
__device__ __forceinline__ T mv_activate(int code, T t) {
    if (code == MV_RELU) return t > T(0) ? t : T(0);
    if (code == MV_TANH) return tanh(t);
    if (code == MV_SIGMOID) {
        T e = exp(-fabs(t));
        return t >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
    }
    return t;
}

// act'(t) written with y = act(t): relu 1[y > 0], tanh 1 - y^2, sigmoid y (1 - y).
template <typename T>
__device__ __forceinline__ T mv_activate_grad(int code, T y) {
    if (code == MV_RELU) return y > T(0) ? T(1) : T(0);
    if (code == MV_TANH) return T(1) - y * y;
    if (code == MV_SIGMOID) return y * (T(1) - y);
    return T(1);
}

// One term of the KL sum: 1 + logvar - mu^2 - exp(logvar).
template <typename T>
__device__ __forceinline__ T mv_kl_term(T mu, T logvar) {
    return T(1) + logvar - mu * mu - exp(logvar);
}

// x l - softplus(l), softplus(l) = max(l, 0) + log1p(e^-|l|) (no overflow).
template <typename T>
__device__ __forceinline__ T mv_bernoulli_term(T x, T logit) {
    return x * logit - ((logit > T(0) ? logit : T(0)) + log1p(exp(-fabs(logit))));
}

#endif  // MINIVAE_POINTWISE_CU
