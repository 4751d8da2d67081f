"""GPU checks of the device sampler (run by benchmarks/gpu_check.sh; see its header).

Two parts, each run on its own by gpu_check.sh (own process, own timeout, own result line):

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

--dry-run runs everything that needs no GPU: the numpy references, the NVRTC compile when
cuda-python and NVRTC load, and the nvcc compile when nvcc exists.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def skip(name: str, why: str) -> None:
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
        last = (cuda, exe, stream, bufs, out)
        if (h, w, c, masked) != (16, 16, 64, 1):
            rt.cudaGraphExecDestroy(exe)
    check_native_memory(*last)


def used_memory(cuda) -> int:
    from bld_runtime.backends import cudart

    free, total = cudart.check(cuda.rt.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(total) - int(free)


def check_native_memory(cuda, exe, stream, bufs, out) -> None:
    """REQUESTS requests as the native backend serves them (upload the seeds, replay the
    captured loop, read the bits back): nothing may be allocated per request."""
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


def check_runtime_backend(name: str, gpu, cpu, requests: int) -> None:
    """Parity with the CPU runtime, requests from another thread (each thread binds the
    backend's device itself), and device memory over `requests` requests of mixed sizes."""
    from concurrent.futures import ThreadPoolExecutor

    from bld_engines.parity import check_parity

    device = gpu.backend.options.device_id
    others = {d: device_memory_in_use(d) for d in range(device)}  # must stay untouched
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
    try:
        gpu = Pipeline.load(
            bundle, backend="cuda", precision=precision, options=BackendOptions(device_id=device)
        )
    except BldError as e:
        skip("onnxruntime-gpu", str(e))
        return
    cpu = Pipeline.load(bundle, backend="cpu", precision=precision)
    check_runtime_backend(f"cuda backend on GPU {device} ({precision})", gpu, cpu, requests)


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
            f"TensorRT ({flavour.describe()}, {precision}) on GPU {device}", gpu, cpu, requests
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
    print(f"part {part}: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="only what needs no GPU")
    parser.add_argument("--part", choices=("cuda", "gpu-runtimes"), default="cuda")
    parser.add_argument("--bundle", default=None, help="a bundle for the gpu-runtimes part")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--requests", type=int, default=REQUESTS, help="for the memory checks")
    args = parser.parse_args()
    if args.dry_run:
        return dry_run()
    if args.part == "cuda":
        return part_cuda()
    return part_gpu_runtimes(args.bundle, args.precision, args.requests)


if __name__ == "__main__":
    sys.exit(main())
