"""GPU checks of the device sampler (run by benchmarks/gpu_check.sh; see its header).

Three parts, each run on its own by gpu_check.sh (own process, own timeout, own result line):

--part cuda (a GPU with CuPy and cuda-python; no TensorRT, no onnxruntime-gpu):
  1. kernel      the device kernels (KERNELS: csrc/bld_philox.h) compiled by NVRTC, through CuPy
                 and through cuda-python: uniforms and draws vs numpy Philox (bld_runtime.philox)
                 bit for bit, and the uniforms vs cuRAND's curand_uniform (nvcc-built helper for
                 this GPU's sm; skipped where the toolkit has no curand_kernel.h)
  2. loop        the full K-step loop on the GPU (initial draw, K-1 draws, last-step threshold,
                 inpainting mask) vs the CPU runtime's drawer, given the same step outputs
  3. graph       the same loop through the native backend's cuda-python path (cudart.Kernels,
                 device buffers) captured into one CUDA graph and replayed
  4. memory      1,000 requests through that captured loop (upload, replay, read back): the
                 device memory in use must not grow

--part gpu-runtimes (needs TensorRT or onnxruntime-gpu; each skipped where missing):
  5. tensorrt    with --bundle: engines built for the bundle, the native backend against the CPU
                 runtime (bld_engines.parity), CUDA graph replay vs step by step, requests from
                 another thread, on the last GPU when there are several (device binding), and
                 device memory over --requests requests of mixed batch sizes
  6. onnxruntime with --bundle: the `cuda` backend (CuPy draws) against the CPU runtime, from
                 another thread and on the last GPU, and its memory over the same requests

--part cpp-tensorrt (the TensorRT SDK: NvInfer.h and libnvinfer; run by gpu_check.sh where found):
  7. cpp         runtime/cpp built with -DBLD_WITH_TENSORRT=ON (runtime/cpp/build-gpu-check);
                 with --bundle: engines built by the Python TensorRT into a copy of the bundle
                 (else the bundle's own engines/), then bld-probe: --backend tensorrt bits vs
                 the C++ CPU runtime at batch 1, 3 and max_batch (fp32 bit for bit; fp16 only
                 reported, its kernels may drift), the draws re-made from its traced step
                 outputs (bit-exact), two threads running different batch sizes at once vs one
                 thread, no "NVRTC does not know" on stderr; bld-cpp bench's device memory
                 (nvidia-smi per process; skipped where not reported) flat over its requests

A part that checked nothing (every check skipped) exits 3: gpu_check.sh reports it skipped.

--dry-run runs everything that needs no GPU: the numpy references, the NVRTC compile when
cuda-python and NVRTC load, and the nvcc compile when nvcc exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for sub in ("runtime", "export", "engines"):
    sys.path.insert(0, str(REPO / sub))

from bld_runtime import philox  # noqa: E402
from bld_runtime.backends.kernels import KERNELS  # noqa: E402

# The checks' own kernel: the uniforms of the contract's stream, from the shared device code.
CHECK_KERNELS = (
    KERNELS
    + r"""
extern "C" __global__ void check_uniforms(const bld_u64 *seeds, bld_u64 subsequence, long long n,
                                          long long blocks, int batch, float *out) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)batch * blocks) return;
    long long image = t / blocks, block = t % blocks;
    float u[4];
    bld_block_uniforms(seeds[image], subsequence, block, u);
    for (int w = 0; w < 4; ++w) {
        long long e = 4 * block + w;
        if (e < n) out[image * n + e] = u[w];
    }
}
"""
)
THREADS = 256
REQUESTS = 1000  # the memory checks' request count
# Device memory that may come and go between two cudaMemGetInfo readings without a leak (the
# driver's own bookkeeping; allocations are in 2 MiB pages).
MEMORY_SLACK = 4 << 20
# Seeds that exercise both key words, the top of the range and a batch not divisible by 4.
SEEDS = np.array([0, 1, 42, 2**32 - 1, 2**32, 2**63 + 12345, 2**64 - 1], np.uint64)
SIZES = ((4, 4, 32), (16, 16, 64), (3, 5, 7))  # (h, w, bits): digits, paper256, odd tail
K = 16

results: list[tuple[str, bool, str]] = []


def report(name: str, ok: bool, detail: str) -> None:
    results.append((name, ok, detail))
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)


skipped: list[tuple[str, str]] = []
#: A part's exit status when it checked nothing (every check skipped): gpu_check.sh reports the
#: part as skipped, not passed.
SKIPPED_EXIT = 3


def skip(name: str, why: str) -> None:
    skipped.append((name, why))
    print(f"[skip] {name}: {why}", flush=True)


# --- references (numpy, the CPU runtime's drawer) ---------------------------------------------


def step_tables(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 'step outputs': p = A[i] where the bit is 1, B[i] where it is 0. Exact in
    float32 on both sides, and the loop's path depends on every draw."""
    a = rng.random((K, n), dtype=np.float32)
    b = rng.random((K, n), dtype=np.float32)
    a[:, :3], b[:, :3] = 0.5, 0.5  # include ties with the threshold
    return a, b


def reference_loop(seeds, n, a, b, keep, known):
    """The contract's loop on the host with bld_runtime.philox (what the CPU backend draws)."""
    batch = len(seeds)
    bits = philox.bernoulli(np.full((batch, n), 0.5, np.float32), seeds, 0)
    if keep is not None:
        np.copyto(bits, known, where=keep.astype(bool))
    for i in range(K):
        p = np.where(bits == 1, a[i], b[i]).astype(np.float32)
        bits = philox.bernoulli(p, seeds, i + 1) if i < K - 1 else (p > 0.5).astype(np.uint8)
        if keep is not None:
            np.copyto(bits, known, where=keep.astype(bool))
    return bits


def cases():
    rng = np.random.default_rng(7)
    for h, w, c in SIZES:
        n = h * w * c
        a, b = step_tables(n, rng)
        keep = (rng.random((len(SEEDS), n)) < 0.3).astype(np.uint8)
        known = rng.integers(0, 2, (len(SEEDS), n)).astype(np.uint8)
        for masked in (False, True):
            yield (h, w, c), n, a, b, (keep if masked else None), (known if masked else None)


# --- 1. kernels vs numpy vs cuRAND ------------------------------------------------------------


def check_cupy_kernels(cp) -> None:
    module = cp.RawModule(code=CHECK_KERNELS, options=("--std=c++11",))
    uniforms, draw = module.get_function("check_uniforms"), module.get_function("bld_draw")
    seeds = cp.asarray(SEEDS)
    batch = len(SEEDS)
    for h, w, c in SIZES:
        n = h * w * c
        blocks = -(-n // 4)
        grid = (-(-(batch * blocks) // THREADS),)
        for sub in (0, 1, 15, 2**32 + 3):
            out = cp.zeros((batch, n), cp.float32)
            uniforms(
                grid,
                (THREADS,),
                (seeds, np.uint64(sub), np.int64(n), np.int64(blocks), np.int32(batch), out),
            )
            ref = philox.uniforms(SEEDS, sub, n)
            same = np.array_equal(cp.asnumpy(out).view(np.uint32), ref.view(np.uint32))
            report(
                f"kernel uniforms vs numpy ({h}x{w}x{c}, subsequence {sub})",
                same,
                "bit for bit" if same else "differ",
            )
            p = np.random.default_rng(sub % 1000).random((batch, n), dtype=np.float32)
            bits = cp.zeros((batch, n), cp.float32)
            dummy_keep, dummy_known = cp.zeros(1, cp.uint8), cp.zeros(1, cp.float32)
            draw(
                grid,
                (THREADS,),
                (
                    cp.asarray(p),
                    seeds,
                    np.uint64(sub),
                    np.int64(n),
                    np.int64(blocks),
                    np.int32(batch),
                    bits,
                    dummy_keep,
                    dummy_known,
                    np.int32(0),
                ),
            )
            same = np.array_equal(
                cp.asnumpy(bits).astype(np.uint8), philox.bernoulli(p, SEEDS, sub)
            )
            report(
                f"kernel draw vs numpy ({h}x{w}x{c}, subsequence {sub})",
                same,
                "bit for bit" if same else "differ",
            )


def curand_includes() -> list[str]:
    """-I flags for curand_kernel.h where the CUDA toolkit lacks it (pip's nvidia-curand)."""
    import importlib.util
    import os

    dirs = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"]
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        dirs += [Path(root) / "cu13" / "include", Path(root) / "curand" / "include"]
    return [f"-I{d}" for d in dirs if (d / "curand_kernel.h").is_file()]


def build_curand_helper(workdir: Path, arch: str) -> Path | None:
    """nvcc-built cuRAND reference for `arch` (sm_XY of the device: a cubin, never PTX that a
    driver older than the toolkit refuses); skipped, not failed, without nvcc or cuRAND."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        skip("cuRAND helper", "nvcc is not on PATH")
        return None
    includes = curand_includes()
    if not includes:
        skip(
            "cuRAND helper",
            "this CUDA toolkit has no curand_kernel.h (pip install nvidia-curand provides it)",
        )
        return None
    exe = workdir / "curand_uniform"
    done = subprocess.run(
        [nvcc, "-O2", f"-arch={arch}", *includes, "-o", str(exe), str(HERE / "curand_uniform.cu")],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        report(f"nvcc builds the cuRAND helper ({arch})", False, done.stderr.strip()[-300:])
        return None
    return exe


def check_curand(exe: Path, workdir: Path) -> None:
    seed_file = workdir / "seeds.bin"
    SEEDS.astype("<u8").tofile(seed_file)
    n = 1027  # not a multiple of 4: the last Philox block is partly used
    for sub in (0, 1, 15, 2**32 + 3):
        out = workdir / "uniforms.bin"
        done = subprocess.run(
            [str(exe), str(seed_file), str(sub), str(n), str(out)], capture_output=True, text=True
        )
        if done.returncode != 0:
            report(f"curand_uniform (subsequence {sub})", False, done.stderr.strip())
            continue
        theirs = np.fromfile(out, np.float32).reshape(len(SEEDS), n)
        ours = philox.uniforms(SEEDS, sub, n)
        same = np.array_equal(theirs.view(np.uint32), ours.view(np.uint32))
        report(
            f"curand_uniform vs numpy Philox (subsequence {sub})",
            same,
            "bit for bit" if same else f"{int((theirs != ours).sum())} values differ",
        )


# --- 2. the loop through CuPy (what the onnxruntime GPU backends launch) ---------------------


def check_cupy_loop(cp) -> None:
    module = cp.RawModule(code=KERNELS, options=("--std=c++11",))
    draw, threshold = module.get_function("bld_draw"), module.get_function("bld_threshold")
    batch = len(SEEDS)
    seeds = cp.asarray(SEEDS)
    for (h, w, c), n, a, b, keep, known in cases():
        blocks = -(-n // 4)
        grid = (-(-(batch * blocks) // THREADS),)
        masked = np.int32(keep is not None)
        d_keep = cp.asarray(keep if keep is not None else np.zeros((batch, n), np.uint8))
        d_known = cp.asarray(
            (known if known is not None else np.zeros((batch, n))).astype(np.float32)
        )
        bits = cp.zeros((batch, n), cp.float32)
        half = cp.full((batch, n), 0.5, cp.float32)
        a_dev, b_dev = cp.asarray(a), cp.asarray(b)
        draw(
            grid,
            (THREADS,),
            (
                half,
                seeds,
                np.uint64(0),
                np.int64(n),
                np.int64(blocks),
                np.int32(batch),
                bits,
                d_keep,
                d_known,
                masked,
            ),
        )
        for i in range(K):
            p = cp.where(bits == 1, a_dev[i], b_dev[i]).astype(cp.float32)  # the "step graph"
            if i < K - 1:
                draw(
                    grid,
                    (THREADS,),
                    (
                        p,
                        seeds,
                        np.uint64(i + 1),
                        np.int64(n),
                        np.int64(blocks),
                        np.int32(batch),
                        bits,
                        d_keep,
                        d_known,
                        masked,
                    ),
                )
            else:
                total = batch * n
                threshold(
                    (-(-total // THREADS),),
                    (THREADS,),
                    (p, np.int64(total), bits, d_keep, d_known, masked),
                )
        ours = cp.asnumpy(bits).astype(np.uint8)
        ref = reference_loop(SEEDS, n, a, b, keep, known)
        same = np.array_equal(ours, ref)
        report(
            f"{K}-step loop, CuPy kernels vs CPU ({h}x{w}x{c}, "
            f"{'masked' if keep is not None else 'unmasked'})",
            same,
            "bit for bit" if same else f"{int((ours != ref).sum())} bits differ",
        )


# --- 3. the native backend's cuda-python path, captured into a CUDA graph --------------------


def check_native_graph(cp) -> None:
    """Teacher-forced K-step loops captured as CUDA graphs, then the memory of 1,000
    requests through the last one."""
    from bld_runtime.backends import cudart
    from bld_runtime.backends.cudart import DeviceBuffer, copy_to_device

    info = cudart.probe()
    cuda = cudart.import_cuda()
    rt = cuda.rt
    cudart.check(rt.cudaSetDevice(0), "cudaSetDevice")
    cudart.check(rt.cudaFree(0), "cudaFree")
    kernels = cudart.Kernels(cuda, KERNELS, ("bld_draw", "bld_threshold"), info.compute_capability)
    stream = cudart.check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "stream")
    batch = len(SEEDS)
    kept: tuple[Any, ...] | None = None
    for (h, w, c), n, a, b, keep, known in cases():
        masked = int(keep is not None)
        bufs = {
            name: DeviceBuffer(cuda, nbytes)
            for name, nbytes in (
                ("seeds", batch * 8),
                ("bits", batch * n * 4),
                ("half", batch * n * 4),
                ("keep", batch * n),
                ("known", batch * n * 4),
            )
        }
        copy_to_device(cuda, bufs["seeds"], SEEDS, stream)
        copy_to_device(cuda, bufs["half"], np.full((batch, n), 0.5, np.float32), stream)
        copy_to_device(
            cuda, bufs["keep"], keep if masked else np.zeros((batch, n), np.uint8), stream
        )
        copy_to_device(
            cuda,
            bufs["known"],
            (known if masked else np.zeros((batch, n))).astype(np.float32),
            stream,
        )
        # The step outputs for the graph: one probs buffer per step, written by CuPy before
        # each replay would be the step graph's job; here all K are precomputed from A/B
        # after the run, so we check the draw chain with teacher-forced step outputs instead.
        states = reference_states(SEEDS, n, a, b, keep, known)
        probs = [DeviceBuffer(cuda, batch * n * 4) for _ in range(K)]
        for i in range(K):
            p = np.where(states[i] == 1, a[i], b[i]).astype(np.float32)
            copy_to_device(cuda, probs[i], p, stream)
        cudart.check(rt.cudaStreamSynchronize(stream), "sync")

        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cudart.check(rt.cudaStreamBeginCapture(stream, mode), "begin capture")
        launch_loop(kernels, stream, bufs, probs, batch, n, masked)
        graph = cudart.check(rt.cudaStreamEndCapture(stream), "end capture")
        exe = cudart.check(rt.cudaGraphInstantiate(graph, 0), "instantiate")
        for _ in range(2):  # replayed twice: the same result
            cudart.check(rt.cudaGraphLaunch(exe, stream), "launch")
        out = np.zeros((batch, n), np.float32)
        cudart.copy_to_host(cuda, out, bufs["bits"], stream)
        cudart.check(rt.cudaStreamSynchronize(stream), "sync")
        rt.cudaGraphDestroy(graph)
        ref = reference_loop(SEEDS, n, a, b, keep, known)
        same = np.array_equal(out.astype(np.uint8), ref)
        report(
            f"{K} steps as one CUDA graph via cuda-python ({h}x{w}x{c}, "
            f"{'masked' if masked else 'unmasked'})",
            same,
            "bit for bit" if same else f"{int((out.astype(np.uint8) != ref).sum())} differ",
        )
        if (h, w, c, masked) == (16, 16, 64, 1):
            # Kept for the memory check: its graph, and every buffer baked into it (bufs and
            # the K probs buffers, which would be freed once `probs` is reassigned).
            kept = (cuda, exe, stream, bufs, out, probs)
        else:
            rt.cudaGraphExecDestroy(exe)
    if kept is None:
        report("captured-loop memory check", False, "no 16x16x64 masked case to replay")
        return
    check_native_memory(*kept)


def used_memory(cuda) -> int:
    from bld_runtime.backends import cudart

    free, total = cudart.check(cuda.rt.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(total) - int(free)


def check_native_memory(cuda, exe, stream, bufs, out, probs) -> None:
    """REQUESTS requests as the native backend serves them (upload the seeds, replay the
    captured loop, read the bits back): nothing may be allocated per request. `probs` (the
    step-output buffers the graph reads) is passed only to keep them alive while it replays."""
    from bld_runtime.backends import cudart
    from bld_runtime.backends.cudart import copy_to_device

    rt = cuda.rt

    def request(r: int) -> None:
        seeds = SEEDS + np.uint64(r)
        copy_to_device(cuda, bufs["seeds"], seeds, stream)
        cudart.check(rt.cudaGraphLaunch(exe, stream), "launch")
        cudart.copy_to_host(cuda, out, bufs["bits"], stream)
        cudart.check(rt.cudaStreamSynchronize(stream), "sync")

    for r in range(10):  # warm-up
        request(r)
    before = used_memory(cuda)
    for r in range(REQUESTS):
        request(r)
    grown = used_memory(cuda) - before
    rt.cudaGraphExecDestroy(exe)
    del probs  # the graph is gone: its buffers may go now
    report(
        f"device memory over {REQUESTS} captured-loop requests",
        grown <= MEMORY_SLACK,
        f"grew by {grown / 2**20:.1f} MiB (allowed {MEMORY_SLACK >> 20} MiB)",
    )


def launch_loop(kernels, stream, bufs, probs, batch: int, n: int, masked: int) -> None:
    """The K-step draw chain as the native backend launches it (captured into a CUDA graph)."""
    from bld_runtime.backends.cudart import I32, I64, PTR, U64

    blocks = -(-n // 4)

    def args(p_ptr, sub):
        return (
            (p_ptr, PTR),
            (bufs["seeds"].ptr, PTR),
            (sub, U64),
            (n, I64),
            (blocks, I64),
            (batch, I32),
            (bufs["bits"].ptr, PTR),
            (bufs["keep"].ptr, PTR),
            (bufs["known"].ptr, PTR),
            (masked, I32),
        )

    grid = -(-(batch * blocks) // THREADS)
    kernels.launch("bld_draw", grid, THREADS, stream, args(bufs["half"].ptr, 0))
    for i in range(K - 1):
        kernels.launch("bld_draw", grid, THREADS, stream, args(probs[i].ptr, i + 1))
    total = batch * n
    kernels.launch(
        "bld_threshold",
        -(-total // THREADS),
        THREADS,
        stream,
        (
            (probs[K - 1].ptr, PTR),
            (total, I64),
            (bufs["bits"].ptr, PTR),
            (bufs["keep"].ptr, PTR),
            (bufs["known"].ptr, PTR),
            (masked, I32),
        ),
    )


def reference_states(seeds, n, a, b, keep, known):
    """The state fed to each step by the reference loop (for teacher-forced step outputs)."""
    batch = len(seeds)
    bits = philox.bernoulli(np.full((batch, n), 0.5, np.float32), seeds, 0)
    states = []
    for i in range(K):
        if keep is not None:
            np.copyto(bits, known, where=keep.astype(bool))
        states.append(bits.copy())
        p = np.where(bits == 1, a[i], b[i]).astype(np.float32)
        bits = philox.bernoulli(p, seeds, i + 1) if i < K - 1 else (p > 0.5).astype(np.uint8)
    return states


# --- 5, 6. TensorRT and onnxruntime-gpu ------------------------------------------------------


def device_count() -> int:
    from bld_runtime.backends import cudart

    return cudart.probe().count


def device_memory_in_use(device: int) -> int:
    """Bytes in use on `device` once its queued work is done (any backend: one process, one
    primary context per device)."""
    from bld_runtime.backends import cudart

    cuda = cudart.import_cuda()
    cudart.check(cuda.rt.cudaSetDevice(device), "cudaSetDevice")
    cudart.check(cuda.rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
    return used_memory(cuda)


def baseline_other_gpus(device: int) -> dict[int, int]:
    """Memory in use on every GPU before `device`, taken BEFORE Pipeline.load so that
    allocations made on the wrong device while loading are caught too."""
    return {d: device_memory_in_use(d) for d in range(device)}


def check_runtime_backend(name: str, gpu, cpu, requests: int, others: dict[int, int]) -> None:
    """Parity with the CPU runtime, requests from another thread (each thread binds the
    backend's device itself), and device memory over `requests` requests of mixed sizes.
    `others`: baseline_other_gpus(device) from before the pipeline was loaded; nothing may
    land on those GPUs."""
    from concurrent.futures import ThreadPoolExecutor

    from bld_engines.parity import check_parity

    device = gpu.backend.options.device_id
    parity = check_parity(gpu, cpu, n=4)
    report(f"{name} vs CPU runtime", parity.ok, parity.describe())
    here = gpu.generate(n=3, seeds=5)
    with ThreadPoolExecutor(1) as pool:
        there = pool.submit(lambda: gpu.generate(n=3, seeds=5)).result()
    same = np.array_equal(here.bits, there.bits)
    report(f"{name}: a request from another thread", same, "same bits" if same else "differ")
    sizes = sorted({1, 2, 3, gpu.max_batch})

    def request(r: int) -> None:  # every size, guided (where the bundle has classes) and not
        n = sizes[r % len(sizes)]
        if gpu.num_classes == 0:
            gpu.generate(n=n, seeds=r)
        else:
            classes = np.arange(n) % gpu.num_classes
            gpu.generate(n=n, seeds=r, classes=classes, guidance=float(r // len(sizes) % 2))

    for r in range(len(sizes) * 2):  # warm-up: every loop and context the requests use
        request(r)
    before = device_memory_in_use(device)
    for r in range(requests):
        request(r)
    grown = device_memory_in_use(device) - before
    for d, used in others.items():
        moved = device_memory_in_use(d) - used
        report(
            f"{name}: nothing on GPU {d} (device binding)",
            moved <= MEMORY_SLACK,
            f"GPU {d} memory changed by {moved / 2**20:.1f} MiB",
        )
    report(
        f"{name}: device memory over {requests} requests (batch sizes {sizes})",
        grown <= MEMORY_SLACK,
        f"grew by {grown / 2**20:.1f} MiB (allowed {MEMORY_SLACK >> 20} MiB)",
    )


def check_onnxruntime_gpu(bundle: str | None, precision: str, requests: int) -> None:
    from bld_runtime.backends import BackendOptions
    from bld_runtime.errors import BldError
    from bld_runtime.pipeline import Pipeline

    if bundle is None:
        skip("onnxruntime-gpu", "pass --bundle to run the cuda backend")
        return
    device = device_count() - 1  # the last GPU: binding to a device other than 0 when there
    others = baseline_other_gpus(device)
    try:
        gpu = Pipeline.load(
            bundle, backend="cuda", precision=precision, options=BackendOptions(device_id=device)
        )
    except BldError as e:
        skip("onnxruntime-gpu", str(e))
        return
    cpu = Pipeline.load(bundle, backend="cpu", precision=precision)
    check_runtime_backend(f"cuda backend on GPU {device} ({precision})", gpu, cpu, requests, others)


def check_tensorrt(bundle: str | None, precision: str, requests: int = REQUESTS) -> None:
    from bld_runtime.errors import BldError
    from bld_runtime.trt_flavours import import_flavour

    try:
        flavour = import_flavour(need_builder=True)
    except BldError as e:
        skip("tensorrt", str(e))
        return
    if bundle is None:
        skip("tensorrt", f"{flavour.describe()} is importable; pass --bundle to build and run")
        return
    from bld_engines.builder import BuildOptions, build_bundle
    from bld_runtime.backends import BackendOptions
    from bld_runtime.pipeline import Pipeline

    device = device_count() - 1  # the last GPU: binding to a device other than 0 when there
    with tempfile.TemporaryDirectory(prefix="bld-gpu-check-") as cache:
        start = time.perf_counter()
        # Built on GPU 0 (several GPUs must be one model: the engines carry its sm).
        build_bundle(bundle, cache, BuildOptions(precision=precision))
        print(f"[info] engines built in {time.perf_counter() - start:.1f}s", flush=True)
        others = baseline_other_gpus(device)  # after the build (on GPU 0), before the load
        gpu = Pipeline.load(
            bundle,
            backend="tensorrt",
            precision=precision,
            options=BackendOptions(trt_cache_dir=cache, device_id=device),
        )
        cpu = Pipeline.load(bundle, backend="cpu", precision=precision)
        memory = ", ".join(
            f"{name} {size / 2**20:.1f} MiB"
            for name, size in sorted(gpu.backend.device_memory().items())
        )
        print(f"[info] scratch memory per engine (largest profile): {memory}", flush=True)
        check_runtime_backend(
            f"TensorRT ({flavour.describe()}, {precision}) on GPU {device}",
            gpu,
            cpu,
            requests,
            others,
        )
        fused = gpu.generate(n=4, seeds=0)  # the CUDA-graph path (no trace)
        stepwise = gpu.generate(n=4, seeds=0, trace=True)
        same = np.array_equal(fused.bits, stepwise.bits)
        report(
            "TensorRT loop: CUDA graph replay vs step by step",
            same,
            "identical bits" if same else "differ",
        )


def part_cuda() -> int:
    """Part (a): what a GPU without TensorRT or onnxruntime-gpu can check."""
    try:
        import cupy as cp

        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - no CuPy, driver or GPU: CuPy raises its own types
        print(f"error: the cuda part needs CuPy and a GPU ({type(e).__name__}: {e})")
        return 1
    props = cp.cuda.runtime.getDeviceProperties(0)
    arch = f"sm_{props['major']}{props['minor']}"
    print(f"GPU: {props['name'].decode()} ({arch}), {count} device(s); CuPy {cp.__version__}")
    check_cupy_kernels(cp)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_curand_helper(Path(tmp), arch)
        if exe is not None:
            check_curand(exe, Path(tmp))
    check_cupy_loop(cp)
    from bld_runtime.backends import cudart
    from bld_runtime.errors import BackendUnavailableError

    try:  # a CuPy-only install (bld[cupy-cuda12]) brings no cuda-bindings: skip, not fail
        cudart.import_cuda()
    except BackendUnavailableError as e:
        skip("native cuda-python path (CUDA graph, memory)", str(e))
        return finish("cuda")
    try:
        check_native_graph(cp)
    except Exception as e:  # noqa: BLE001 - cuda-python or NVRTC missing, or a real failure
        report("native cuda-python path", False, f"{type(e).__name__}: {e}")
    return finish("cuda")


def part_gpu_runtimes(bundle: str | None, precision: str, requests: int) -> int:
    """Part (b): what needs TensorRT or onnxruntime-gpu (each skipped where missing)."""
    from bld_runtime.backends import cudart

    info = cudart.probe()
    if info.count < 1:
        print(f"error: the gpu-runtimes part needs a GPU ({info.problem})")
        return 1
    print(f"GPU: {info.name} (sm_{(info.compute_capability or '').replace('.', '')})")
    for check in (check_tensorrt, check_onnxruntime_gpu):
        try:
            check(bundle, precision, requests)
        except Exception as e:  # noqa: BLE001 - report it and go on to the next runtime
            report(check.__name__.removeprefix("check_"), False, f"{type(e).__name__}: {e}")
    return finish("gpu-runtimes")


def finish(part: str) -> int:
    failed = [name for name, ok, _ in results if not ok]
    print(
        f"part {part}: {len(results) - len(failed)} passed, {len(failed)} failed"
        + (f", {len(skipped)} skipped" if skipped else ""),
        flush=True,
    )
    if failed:
        return 1
    return SKIPPED_EXIT if skipped and not results else 0


def dry_run() -> int:
    """What runs without a GPU: references, NVRTC and nvcc compiles."""
    for _, n, a, b, keep, known in cases():
        reference_loop(
            SEEDS[:2],
            n,
            a,
            b,
            None if keep is None else keep[:2],
            None if known is None else known[:2],
        )
    print("[ok] numpy references run")
    try:
        from bld_runtime.backends import cudart

        cuda = cudart.import_cuda()
        for cc in ("8.7", "9.0"):
            image = cudart.compile_source(cuda, CHECK_KERNELS, cc, "gpu_check.cu")
            print(
                f"[ok] NVRTC compiles the check kernels for sm_{cc.replace('.', '')} "
                f"({len(image)} bytes)"
            )
    except Exception as e:  # noqa: BLE001 - a missing cuda-python or libnvrtc
        print(f"[skip] NVRTC: {' '.join(str(e).split())[:160]}")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_curand_helper(Path(tmp), "sm_87")
        if exe is not None:
            print("[ok] nvcc builds the cuRAND helper for sm_87")
    failed = [name for name, ok, _ in results if not ok]
    return 1 if failed else 0


# --- 7. the C++ native TensorRT backend (part cpp-tensorrt) -----------------------------------

CPP = REPO / "runtime" / "cpp"
CPP_BUILD = CPP / "build-gpu-check"  # its own build folder: -DBLD_WITH_TENSORRT=ON
NVRTC_UNKNOWN = "NVRTC does not know"  # the C++ backend's note when it falls back to PTX


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def build_cpp_tensorrt(trt_root: str, ort_root: Path) -> tuple[Path, Path] | None:
    """bld-probe and bld-cpp built with the native TensorRT backend, or None (reported)."""
    jobs = str(os.cpu_count() or 2)
    steps = (
        [
            "cmake",
            "-S",
            str(CPP),
            "-B",
            str(CPP_BUILD),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBLD_WITH_TENSORRT=ON",
            "-DBLD_BUILD_TESTS=ON",  # bld-probe lives with the tests
            f"-DTENSORRT_ROOT={trt_root}",
            f"-DONNXRUNTIME_ROOT={ort_root}",
        ],
        ["cmake", "--build", str(CPP_BUILD), "-j", jobs, "--target", "bld-probe", "bld-cpp"],
    )
    start = time.perf_counter()
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            report(
                "C++ build with -DBLD_WITH_TENSORRT=ON",
                False,
                f"{' '.join(cmd[:2])} exited {done.returncode}:\n{tail(done.stdout + done.stderr)}",
            )
            return None
    probe, app = CPP_BUILD / "tests" / "bld-probe", CPP_BUILD / "bld-cpp"
    missing = [str(p) for p in (probe, app) if not p.is_file()]
    report(
        "C++ build with -DBLD_WITH_TENSORRT=ON",
        not missing,
        f"{CPP_BUILD} in {time.perf_counter() - start:.0f}s"
        + (f"; missing {', '.join(missing)}" if missing else ""),
    )
    return None if missing else (probe, app)


def sdk_version(trt_root: str) -> str:
    """TensorRT's version from the SDK's NvInferVersion.h ("?" where unreadable)."""
    import re

    for header in sorted(Path(trt_root).glob("include/**/NvInferVersion.h")):
        text = header.read_text(errors="replace")
        parts = [
            re.search(rf"#define (?:NV_TENSORRT|TRT)_{k}(?:_ENTERPRISE)? +(\d+)", text)
            for k in ("MAJOR", "MINOR", "PATCH", "BUILD")
        ]
        return ".".join(m.group(1) for m in parts if m)
    return "?"


def bundle_with_engines(bundle: str, precision: str, work: Path, trt_root: str) -> Path | None:
    """A bundle folder whose engines/ (the C++ backend's default cache) holds engines for
    `precision`: a copy of `bundle` with engines built by the Python TensorRT, else `bundle`
    itself where it has engines/; None (skipped) where neither."""
    from bld_runtime.errors import BldError
    from bld_runtime.trt_flavours import import_flavour

    try:
        flavour = import_flavour("tensorrt", need_builder=True)
    except BldError as e:
        if (Path(bundle) / "engines").is_dir():
            print(f"[info] no TensorRT builder in Python ({e}); using {bundle}/engines", flush=True)
            return Path(bundle)
        skip("cpp-tensorrt", f"no engines to run: {bundle}/engines is missing and {e}")
        return None
    from bld_engines.builder import BuildOptions, build_bundle

    copy = work / "bundle"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("engines"))
    print(
        f"[info] engines built by {flavour.describe()} for the SDK's TensorRT "
        f"{sdk_version(trt_root)} (the C++ backend refuses a plan of another version)",
        flush=True,
    )
    start = time.perf_counter()
    build_bundle(str(copy), str(copy / "engines"), BuildOptions(precision=precision))
    print(f"[info] engines built in {time.perf_counter() - start:.1f}s", flush=True)
    return copy


def run_probe(
    probe: Path, bundle: Path, spec: dict[str, Any], out: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """bld-probe BUNDLE SPEC OUTDIR: its process and {name: bits | error text}."""
    import json

    out.mkdir(parents=True)
    (out / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [str(probe), str(bundle), str(out / "spec.json"), str(out)],
        capture_output=True,
        text=True,
    )
    found: dict[str, Any] = {}
    for path in sorted(out.iterdir()):
        if path.name.endswith(".error"):
            found[path.name.removesuffix(".error")] = path.read_text().strip()
        elif path.name.endswith(".npy"):
            found[path.name.removesuffix(".npy")] = np.load(path)
    return done, found


def check_cpp_trace(name: str, trace: dict[str, Any], seeds: list[int]) -> bool:
    """The sampling contract on the C++ backend's own trace: every draw re-made on the host
    from its step outputs is bit-exact (see bld_engines.parity)."""
    states, probs, bits = trace[f"{name}.states"], trace[f"{name}.probs"], trace[f"{name}.bits"]
    K = len(states)
    finals = np.concatenate([states[1:], bits[None]])
    seed_array = np.array(seeds, np.uint64)
    for i in range(K):
        if i < K - 1:
            expected = philox.bernoulli(probs[i], seed_array, i + 1)
        else:
            expected = (probs[i] > np.float32(0.5)).astype(np.uint8)
        if not np.array_equal(expected, finals[i]):
            return False
    return True


def gpu_memory_of(pid: int) -> int | None:
    """MiB the process `pid` holds on any GPU (nvidia-smi), or None where not listed."""
    done = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    used = [
        int(fields[1])
        for line in done.stdout.splitlines()
        if len(fields := [f.strip() for f in line.split(",")]) == 2
        and fields[0] == str(pid)
        and fields[1].isdigit()
    ]
    return sum(used) if used else None


def check_cpp_memory(app: Path, bundle: Path, precision: str, max_batch: int, iters: int) -> None:
    """Device memory of `bld-cpp bench --backend tensorrt` over repeated max_batch requests
    (one size, so its two warm-up runs make every loop and context it uses), sampled from
    outside with nvidia-smi every 0.5 s: what it holds once warm must not grow."""
    cmd = [
        str(app),
        "bench",
        str(bundle),
        "--backend",
        "tensorrt",
        "--precision",
        precision,
        "--batch",
        str(max_batch),
        "--warmup",
        "2",
        "--iters",
        str(iters),
    ]
    samples: list[int] = []
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            while proc.poll() is None:
                used = gpu_memory_of(proc.pid)
                if used is not None:
                    samples.append(used)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        report("C++ tensorrt: bld-cpp bench", False, f"exit {proc.returncode}: {tail(stderr, 5)}")
        return
    report(
        f"C++ tensorrt: no '{NVRTC_UNKNOWN}' on bld-cpp's stderr",
        NVRTC_UNKNOWN not in stderr,
        "none" if NVRTC_UNKNOWN not in stderr else tail(stderr, 3),
    )
    if len(samples) < 4:
        skip(
            "C++ tensorrt: device memory over repeated requests",
            f"not measured: nvidia-smi listed the process {len(samples)} time(s) in its run "
            f"(too short, or per-process memory not reported here, e.g. on Jetson)",
        )
        return
    settled = samples[len(samples) // 4]  # after the warm-up's loops and contexts
    grown = max(samples[len(samples) // 4 :]) - settled
    report(
        f"C++ tensorrt: device memory over {iters} bench requests (nvidia-smi, "
        f"{len(samples)} samples)",
        grown <= MEMORY_SLACK >> 20,
        f"{settled} MiB once warm, grew by {grown} MiB (allowed {MEMORY_SLACK >> 20} MiB)",
    )


def part_cpp_tensorrt(bundle: str | None, precision: str, requests: int, trt_root: str) -> int:
    """Part (c): the C++ runtime's native TensorRT backend against its CPU runtime."""
    name = "cpp-tensorrt"
    if bundle is None:
        skip(name, "pass --bundle to build and run the C++ TensorRT backend")
        return finish(name)
    if (
        shutil.which("nvidia-smi") is None
        or subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=60).returncode
    ):
        skip(name, "no GPU: nvidia-smi is missing or lists none")
        return finish(name)
    if shutil.which("cmake") is None:
        skip(name, "no cmake to build runtime/cpp")
        return finish(name)
    ort_root = Path(os.environ.get("ONNXRUNTIME_ROOT") or CPP / ".deps" / "onnxruntime")
    if not ort_root.is_dir():
        skip(
            name,
            f"no ONNX Runtime SDK at {ort_root} (set ONNXRUNTIME_ROOT or run "
            f"runtime/cpp/scripts/setup_deps.sh): the C++ runtime needs it",
        )
        return finish(name)
    print(f"TensorRT SDK: {trt_root} ({sdk_version(trt_root)}); ONNX Runtime SDK: {ort_root}")
    tools = build_cpp_tensorrt(trt_root, ort_root)
    if tools is None:
        return finish(name)
    probe, app = tools
    from bld_runtime.manifest import load_bundle

    manifest = load_bundle(bundle).manifest
    max_batch, num_classes = manifest.max_batch, manifest.classes.count
    with tempfile.TemporaryDirectory(prefix="bld-gpu-check-cpp-") as tmp:
        work = Path(tmp)
        ready = bundle_with_engines(bundle, precision, work, trt_root)
        if ready is None:
            return finish(name)
        sizes = sorted({1, min(3, max_batch), max_batch})
        reqs: list[dict[str, Any]] = []
        for n in sizes:
            req: dict[str, Any] = {
                "name": f"batch{n}",
                "seeds": [(2**63 + 1000 * n + i) % 2**64 for i in range(n)],
            }
            if num_classes:
                req |= {"classes": [i % num_classes for i in range(n)], "guidance": [0.0]}
            reqs.append(req)
        options = {"precision": precision}
        cpu_run, cpu = run_probe(
            probe, ready, {"options": {**options, "backend": "cpu"}, "requests": reqs}, work / "cpu"
        )
        # Two threads on one pipeline, each through every request in a different order: at
        # once they run different batch sizes (thread 0 batch 1 while thread 1 runs batch 3).
        # The traced copies run step by step (no CUDA graph): they give the step outputs for
        # the contract check; the untraced ones are the served path compared with the CPU.
        trt_spec = {
            "options": {**options, "backend": "tensorrt"},
            "threads": 2,
            "requests": reqs + [{**r, "name": f"{r['name']}_trace", "trace": True} for r in reqs],
        }
        trt_run, trt = run_probe(probe, ready, trt_spec, work / "trt")
        for label, run, got in (("cpu", cpu_run, cpu), ("tensorrt", trt_run, trt)):
            if "load" in got or run.returncode != 0:
                report(
                    f"C++ {label} pipeline",
                    False,
                    str(got.get("load", f"bld-probe exit {run.returncode}: {tail(run.stderr, 5)}")),
                )
        if any(not ok for _, ok, _ in results):
            return finish(name)
        for req in reqs:
            key, n = req["name"], len(req["seeds"])
            if key in trt or key in cpu or f"{key}_trace" in trt:  # an .error file
                error = trt.get(key) or cpu.get(key) or trt.get(f"{key}_trace")
                report(f"C++ tensorrt batch {n}", False, str(error))
                continue
            ours, ref = trt[f"{key}.bits"], cpu[f"{key}.bits"]
            same = np.array_equal(ours, ref)
            detail = "bit for bit" if same else f"{int((ours != ref).sum())} of {ref.size} differ"
            if same or precision == "fp32":
                report(f"C++ tensorrt vs C++ cpu, batch {n} ({precision})", same, detail)
            else:  # fp16 kernels may drift after a close call; the contract check binds
                print(f"[info] C++ tensorrt vs C++ cpu, batch {n} (fp16): {detail}", flush=True)
            exact = check_cpp_trace(f"{key}_trace", trt, req["seeds"])
            report(
                f"C++ tensorrt batch {n}: draws re-made from its step outputs",
                exact,
                "bit-exact" if exact else "DIFFER (the sampling contract is broken)",
            )
            threaded = [trt.get(f"{key}.thread{t}.bits") for t in range(2)]
            agree = all(t is not None and np.array_equal(t, ours) for t in threaded)
            report(
                f"C++ tensorrt batch {n}: two threads with different batch sizes at once",
                agree,
                "same bits as one thread" if agree else "differ (or missing)",
            )
        report(
            f"C++ tensorrt: no '{NVRTC_UNKNOWN}' on bld-probe's stderr",
            NVRTC_UNKNOWN not in trt_run.stderr,
            "none" if NVRTC_UNKNOWN not in trt_run.stderr else tail(trt_run.stderr, 3),
        )
        check_cpp_memory(app, ready, precision, max_batch, max(20, min(requests // 10, 100)))
    return finish(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="only what needs no GPU")
    parser.add_argument("--part", choices=("cuda", "gpu-runtimes", "cpp-tensorrt"), default="cuda")
    parser.add_argument("--bundle", default=None, help="a bundle for the parts that take one")
    parser.add_argument("--trt-root", default="", help="TensorRT SDK (part cpp-tensorrt)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--requests", type=int, default=REQUESTS, help="for the memory checks")
    args = parser.parse_args()
    if args.dry_run:
        return dry_run()
    if args.part == "cuda":
        return part_cuda()
    if args.part == "cpp-tensorrt":
        trt_root = args.trt_root or os.environ.get("TENSORRT_ROOT", "/usr")
        try:
            return part_cpp_tensorrt(args.bundle, args.precision, args.requests, trt_root)
        except Exception as e:  # noqa: BLE001 - one result line, not a traceback
            report("cpp-tensorrt", False, f"{type(e).__name__}: {e}")
            return finish("cpp-tensorrt")
    return part_gpu_runtimes(args.bundle, args.precision, args.requests)


if __name__ == "__main__":
    sys.exit(main())
