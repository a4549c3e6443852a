// Fused optimizer steps, in place over flat C-contiguous buffers, one thread per parameter.
// Launch: ceil(n / blockDim.x) blocks; each thread reads and writes its element once.

// Adam (Kingma & Ba, Algorithm 1, PyTorch's form, written as in their Section 2), with
// sizes = {a_t, eps_t} read from device memory (reference.adam_step_sizes, computed where t and lr live):
// for i: g' = g + wd p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2; p -= a_t m / (sqrt(v) + eps_t)
template <typename T>
__device__ void adam_update(T* p, const T* g, T* m, T* v, long long n, const T* sizes,
                            T beta1, T beta2, T weight_decay) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    T a_t = sizes[0], eps_t = sizes[1];
    T grad = g[i] + weight_decay * p[i];
    T mi = beta1 * m[i] + (T(1) - beta1) * grad;
    T vi = beta2 * v[i] + (T(1) - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] -= a_t * mi / (sqrt(vi) + eps_t);
}

// SGD with momentum (PyTorch's form); the velocity is untouched when momentum is 0.
// for i: g' = g + wd p; u = mu u + g' (if mu != 0), g' = u; p -= lr g'
template <typename T>
__device__ void sgd_update(T* p, const T* g, T* velocity, long long n, T lr, T momentum, T weight_decay) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    T grad = g[i] + weight_decay * p[i];
    if (momentum != T(0)) {
        velocity[i] = momentum * velocity[i] + grad;
        grad = velocity[i];
    }
    p[i] -= lr * grad;
}

extern "C" __global__ void adam_step_f32(float* p, const float* g, float* m, float* v, long long n,
                                         const float* sizes, float beta1, float beta2, float weight_decay) {
    adam_update(p, g, m, v, n, sizes, beta1, beta2, weight_decay);
}

extern "C" __global__ void adam_step_f64(double* p, const double* g, double* m, double* v, long long n,
                                         const double* sizes, double beta1, double beta2, double weight_decay) {
    adam_update(p, g, m, v, n, sizes, beta1, beta2, weight_decay);
}

extern "C" __global__ void sgd_step_f32(float* p, const float* g, float* velocity, long long n,
                                        float lr, float momentum, float weight_decay) {
    sgd_update(p, g, velocity, n, lr, momentum, weight_decay);
}

extern "C" __global__ void sgd_step_f64(double* p, const double* g, double* velocity, long long n,
                                        double lr, double momentum, double weight_decay) {
    sgd_update(p, g, velocity, n, lr, momentum, weight_decay);
}
