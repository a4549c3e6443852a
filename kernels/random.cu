// The CuPy backend's Philox4x32-10 draws (philox.cuh; the statement in NumPy: philox.py).
//
// A draw is two launches on one stream: philox_normals_* reads the key and the counter from the state
// on the device and fills out; philox_advance, after it, adds the calls made to the counter. Their
// arguments are the same at every draw of a shape, so a CUDA graph recording them draws new numbers
// at each replay. One kernel could not do both: its blocks run in no set order, so one block could
// read the counter after another had advanced it.
// cupy_kernels.py inlines philox.cuh in place of the #include, so CuPy's compile cache sees its text.
#include "philox.cuh"

// for t < calls: out[P t .. P t + P - 1] = the normals of call t (P = 4 for float, 2 for double)
// Launch: ceil(calls / blockDim.x) blocks, one thread per call; state is only read.
extern "C" __global__ void philox_normals_f32(const unsigned int* state, float* out, long long n) {
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (4 * t < n) mv_philox_normals(state, t, out, n);
}

extern "C" __global__ void philox_normals_f64(const unsigned int* state, double* out, long long n) {
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (2 * t < n) mv_philox_normals(state, t, out, n);
}

// counter += calls. Launch: one block of one thread, after the draw.
extern "C" __global__ void philox_advance(unsigned int* state, unsigned long long calls) {
    mv_words4 next = mv_counter_plus(state + 2, calls);
    for (int i = 0; i < 4; ++i) state[2 + i] = next.v[i];
}
