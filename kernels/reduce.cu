// Log-sum-exp over axis 0 of a C-contiguous (rows, cols) matrix, one thread per column.
//
// for p: m = max_k a[k, p] (0 if not finite); out[p] = m + log sum_k exp(a[k, p] - m)
// Launch: ceil(cols / blockDim.x) blocks; neighbouring threads read neighbouring
// columns of each row (coalesced). Sums accumulate in double.

template <typename T>
__device__ void logsumexp_columns(const T* a, long long rows, long long cols, T* out) {
    long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (p >= cols) return;
    double top = -__longlong_as_double(0x7ff0000000000000LL);  // -inf
    for (long long k = 0; k < rows; ++k) top = fmax(top, (double)a[k * cols + p]);
    if (!isfinite(top)) top = 0.0;
    double total = 0.0;
    for (long long k = 0; k < rows; ++k) total += exp((double)a[k * cols + p] - top);
    out[p] = (T)(top + log(total));  // log 0 = -inf: every term was -inf
}

extern "C" __global__ void logsumexp_columns_f32(const float* a, long long rows, long long cols, float* out) {
    logsumexp_columns(a, rows, cols, out);
}

extern "C" __global__ void logsumexp_columns_f64(const double* a, long long rows, long long cols, double* out) {
    logsumexp_columns(a, rows, cols, out);
}
