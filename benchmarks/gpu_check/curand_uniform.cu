// cuRAND's own curand_uniform, the reference the contract names (SAMPLING_CONTRACT.md, 2).
// Usage: curand_uniform SEED_FILE SUBSEQUENCE N OUT_FILE
//   SEED_FILE: little-endian uint64 seeds, one stream each; OUT_FILE gets float32 (seeds, N):
//   the first N values of curand_uniform after curand_init(seed, SUBSEQUENCE, 0) with Philox.
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <curand_kernel.h>

__global__ void draw(const unsigned long long *seeds, int count, unsigned long long subsequence,
                     long long n, float *out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    curandStatePhilox4_32_10_t state;
    curand_init(seeds[i], subsequence, 0, &state);
    for (long long e = 0; e < n; ++e) out[i * n + e] = curand_uniform(&state);
}

static void check(cudaError_t err, const char *what) {
    if (err != cudaSuccess) {
        std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
        std::exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s SEED_FILE SUBSEQUENCE N OUT_FILE\n", argv[0]);
        return 2;
    }
    FILE *f = std::fopen(argv[1], "rb");
    if (!f) { std::perror(argv[1]); return 1; }
    std::vector<unsigned long long> seeds;
    unsigned long long s;
    while (std::fread(&s, sizeof s, 1, f) == 1) seeds.push_back(s);
    std::fclose(f);
    unsigned long long subsequence = std::strtoull(argv[2], nullptr, 10);
    long long n = std::atoll(argv[3]);
    int count = (int)seeds.size();
    unsigned long long *d_seeds;
    float *d_out;
    check(cudaMalloc(&d_seeds, count * sizeof s), "cudaMalloc");
    check(cudaMalloc(&d_out, count * n * sizeof(float)), "cudaMalloc");
    check(cudaMemcpy(d_seeds, seeds.data(), count * sizeof s, cudaMemcpyHostToDevice), "copy");
    draw<<<(count + 127) / 128, 128>>>(d_seeds, count, subsequence, n, d_out);
    check(cudaDeviceSynchronize(), "draw");
    std::vector<float> out(count * n);
    check(cudaMemcpy(out.data(), d_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost),
          "copy back");
    FILE *o = std::fopen(argv[4], "wb");
    if (!o) { std::perror(argv[4]); return 1; }
    std::fwrite(out.data(), sizeof(float), out.size(), o);
    std::fclose(o);
    return 0;
}
