"""What the benchmark measures of the machine: resident memory and the fp32 GEMM peak."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import onnxruntime as ort

# --- memory -------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Restart the kernel's resident-set high-water mark (Linux >= 4.0); False if we cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int | None:
    """Peak resident set size: since the last reset on Linux, else since the process began."""
    value = _proc_status_bytes("VmHWM")
    if value is not None:
        return value
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; else kB
    except ImportError:  # Windows
        try:
            import psutil

            return int(psutil.Process().memory_info().peak_wset)
        except (ImportError, AttributeError):
            return None


def current_rss_bytes() -> int | None:
    value = _proc_status_bytes("VmRSS")
    if value is not None:
        return value
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


# --- the machine's GEMM peak --------------------------------------------------------------------


def matmul_model(n: int) -> bytes:
    """An ONNX model computing C = A @ B on float32 [n, n] inputs."""
    import onnx
    from onnx import TensorProto, helper

    tensors = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "ABC"]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm", tensors[:2], tensors[2:]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


def _best_seconds(run, repeats: int) -> float:
    run()  # warm up: thread pools, page faults, packing buffers
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_peak(
    threads: int,
    size: int = 2048,
    repeats: int = 5,
    thread_pool: str = "session",
    pin_threads: bool = False,
) -> dict:
    """fp32 GFLOP/s of a large square matmul, with numpy's BLAS and onnxruntime's MLAS at
    `threads` threads (onnxruntime's in the runtime's `thread_pool`, as its sessions run); the
    best of them is the machine's peak for the roofline figure."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3
    engines = []

    from bld_runtime.backends import BackendOptions
    from bld_runtime.backends.base import caller_pin, pool_cpus

    options = BackendOptions(
        intra_op_threads=threads, thread_pool=thread_pool, pin_threads=pin_threads
    )
    so = options.session_options()
    with pool_cpus(options):
        sess = ort.InferenceSession(
            matmul_model(size), sess_options=so, providers=["CPUExecutionProvider"]
        )
    with caller_pin(options):  # as the runtime's generations run
        seconds = _best_seconds(lambda: sess.run(["C"], {"A": a, "B": b}), repeats)
    engines.append({"engine": "onnxruntime", "gflops": flops / seconds / 1e9, "threads": threads})

    try:  # numpy's BLAS follows a thread limit only through threadpoolctl
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads, user_api="blas"):
            seconds = _best_seconds(lambda: np.matmul(a, b), repeats)
        engines.append({"engine": "numpy", "gflops": flops / seconds / 1e9, "threads": threads})
    return {
        "gflops": max(e["gflops"] for e in engines),
        "size": size,
        "threads": threads,
        "engines": engines,
    }
