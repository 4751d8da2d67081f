"""CUDA through cuda-python, without torch or CuPy: devices, memory, streams, graphs, NVRTC.

cuda-python 13 has only `cuda.bindings.{runtime,driver,nvrtc}` (`cuda.cudart` is gone); the
12.x releases JetPack 6 needs have them from 12.6 on and the old `cuda.cudart/cuda.cuda/
cuda.nvrtc` before: both are handled. Every call returns (error, *results); `check` turns a
non-success into one BackendUnavailableError naming the call.

`probe()` answers "is there a usable GPU?" without side effects: on a machine without a GPU or
driver cudaGetDeviceCount returns error 35 (insufficient driver) instead of raising, and
constructing a TensorRT Runtime there would crash the process later, so everything that makes
one asks `probe()` first.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from numpy.typing import NDArray

from ..errors import BackendUnavailableError

CUDA_PYTHON_HINT = (
    "pip install 'cuda-python>=12.6,<13' (CUDA 12, JetPack 6) or "
    "'cuda-python>=13' (CUDA 13, JetPack 7)"
)


@dataclass(frozen=True)
class Cuda:
    """The three cuda-python modules, whichever layout is installed."""

    rt: ModuleType  # runtime API
    drv: ModuleType  # driver API (kernel modules and launches)
    nvrtc: ModuleType


def import_cuda() -> Cuda:
    try:
        from cuda.bindings import driver, nvrtc, runtime
    except ImportError:
        try:  # cuda-python < 12.6
            from cuda import cuda as driver
            from cuda import cudart as runtime
            from cuda import nvrtc
        except ImportError:
            raise BackendUnavailableError(
                f"the native TensorRT backend needs cuda-python, which is not installed "
                f"({CUDA_PYTHON_HINT})"
            ) from None
    return Cuda(runtime, driver, nvrtc)


def _name(err: object) -> str:
    return str(getattr(err, "name", err))


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-python result tuple; raise on any error code."""
    if not isinstance(result, tuple):
        result = (result,)
    err, rest = result[0], result[1:]
    if int(err) != 0:
        raise BackendUnavailableError(f"CUDA call {what} failed: {_name(err)} ({int(err)})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


@dataclass(frozen=True)
class DeviceInfo:
    count: int
    name: str | None = None
    compute_capability: str | None = None  # "8.7"
    driver: str | None = None  # "12.6"
    runtime: str | None = None
    problem: str | None = None  # why count is 0, in words

    def require(self, device: int = 0) -> str:
        """The device's compute capability ("8.7"); raises when the device is not usable."""
        if self.count < 1:
            raise BackendUnavailableError(f"no CUDA GPU is usable here: {self.problem}")
        if device >= self.count or self.compute_capability is None:
            raise BackendUnavailableError(
                f"CUDA device {device} does not exist (this machine has {self.count})"
            )
        return self.compute_capability


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def probe(device: int = 0) -> DeviceInfo:
    """What CUDA sees, without raising: cuda-python missing, no driver, no GPU, or the device."""
    try:
        cuda = import_cuda()
    except BackendUnavailableError as e:
        return DeviceInfo(0, problem=str(e))
    rt = cuda.rt
    err, count = rt.cudaGetDeviceCount()
    err_drv, drv_version = rt.cudaDriverGetVersion()
    err_rt, rt_version = rt.cudaRuntimeGetVersion()
    driver = _version(drv_version) if int(err_drv) == 0 and drv_version else None
    runtime = _version(rt_version) if int(err_rt) == 0 and rt_version else None
    if int(err) != 0 or not count:
        why = (
            f"cudaGetDeviceCount returned {_name(err)} ({int(err)})"
            if int(err) != 0
            else "cudaGetDeviceCount found no device"
        )
        return DeviceInfo(0, driver=driver, runtime=runtime, problem=why)
    if device >= count:
        return DeviceInfo(count, driver=driver, runtime=runtime)
    err, props = rt.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return DeviceInfo(
            0,
            driver=driver,
            runtime=runtime,
            problem=f"cudaGetDeviceProperties returned {_name(err)}",
        )
    name = (
        props.name.decode(errors="replace").rstrip("\0")
        if isinstance(props.name, bytes)
        else str(props.name)
    )
    return DeviceInfo(
        count,
        name=name,
        compute_capability=f"{props.major}.{props.minor}",
        driver=driver,
        runtime=runtime,
    )


class DeviceBuffer:
    """cudaMalloc'ed memory, freed with the object (or `free`)."""

    def __init__(self, cuda: Cuda, nbytes: int):
        self.cuda, self.nbytes = cuda, max(int(nbytes), 1)
        self.ptr = int(check(cuda.rt.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            self.cuda.rt.cudaFree(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown cuda-python may be gone
            self.free()


def copy_to_device(cuda: Cuda, dst: DeviceBuffer, array: NDArray[Any], stream: Any) -> None:
    kind = cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(
        cuda.rt.cudaMemcpyAsync(dst.ptr, array.ctypes.data, array.nbytes, kind, stream),
        "cudaMemcpyAsync (host to device)",
    )


def copy_to_host(cuda: Cuda, array: NDArray[Any], src: DeviceBuffer, stream: Any) -> None:
    kind = cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(
        cuda.rt.cudaMemcpyAsync(array.ctypes.data, src.ptr, array.nbytes, kind, stream),
        "cudaMemcpyAsync (device to host)",
    )


class Kernels:
    """CUDA C source compiled with NVRTC for the current device and loaded as a module."""

    def __init__(
        self,
        cuda: Cuda,
        source: str,
        names: tuple[str, ...],
        compute_capability: str,
        filename: str = "bld_kernels.cu",
    ):
        self.cuda = cuda
        image = compile_source(cuda, source, compute_capability, filename)
        check(cuda.drv.cuInit(0), "cuInit")
        self.module = check(cuda.drv.cuModuleLoadData(image), "cuModuleLoadData")
        self.functions = {
            n: check(
                cuda.drv.cuModuleGetFunction(self.module, n.encode()), f"cuModuleGetFunction({n})"
            )
            for n in names
        }

    def launch(
        self,
        name: str,
        grid: int,
        block: int,
        stream: Any,
        args: tuple[tuple[Any, type[ctypes._SimpleCData[Any]]], ...],
    ) -> None:
        """Launch `name` on `stream`; args are (value, ctypes type) pairs."""
        values = tuple(v for v, _ in args)
        types = tuple(t for _, t in args)
        grid_dim, block_dim, shared_bytes = (grid, 1, 1), (block, 1, 1), 0
        cu_stream = self.cuda.drv.CUstream(int(stream))
        launched = self.cuda.drv.cuLaunchKernel(
            self.functions[name], *grid_dim, *block_dim, shared_bytes, cu_stream, (values, types), 0
        )
        check(launched, f"cuLaunchKernel({name})")


def compile_source(
    cuda: Cuda, source: str, compute_capability: str, filename: str = "bld_kernels.cu"
) -> bytes:
    """NVRTC: a cubin for sm_XY, or PTX for the newest virtual architecture NVRTC knows when
    it predates the device (the driver JIT-compiles PTX)."""
    nvrtc = cuda.nvrtc
    arch = compute_capability.replace(".", "")
    try:
        nvrtc.nvrtcVersion()
    except Exception as e:  # noqa: BLE001 - cuda-python raises its loader's error types
        raise BackendUnavailableError(
            f"NVRTC (libnvrtc) cannot be loaded: {' '.join(str(e).split())[:160]}; pip install "
            f"nvidia-cuda-nvrtc-cu12 (CUDA 12) or nvidia-cuda-nvrtc (CUDA 13), or set CUDA_HOME "
            f"to a CUDA toolkit"
        ) from None
    try:
        return _nvrtc_compile(nvrtc, source, filename, f"sm_{arch}", cubin=True)
    except BackendUnavailableError as first:
        supported = check(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
        usable = [a for a in supported if a <= int(arch)]
        if not usable:
            raise first
        return _nvrtc_compile(nvrtc, source, filename, f"compute_{max(usable)}", cubin=False)


def _nvrtc_compile(nvrtc: ModuleType, source: str, filename: str, arch: str, cubin: bool) -> bytes:
    prog = check(
        nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
        "nvrtcCreateProgram",
    )
    try:
        options = [f"--gpu-architecture={arch}".encode(), b"--std=c++11"]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        if int(err) != 0:
            size = check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            text = log.decode(errors="replace").strip("\0 \n")
            raise BackendUnavailableError(
                f"NVRTC could not compile {filename} for {arch}: "
                f"{_name(err)}: {text.splitlines()[0] if text else ''}"
            )
        get_size, get = (
            (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
            if cubin
            else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        )
        size = check(get_size(prog), "nvrtc size")
        image: bytes = b" " * size  # NVRTC writes the image into this buffer
        check(get(prog, image), "nvrtc get")
        return image
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


# ctypes types for kernel arguments (cuLaunchKernel's (values, types) form).
PTR, U64, I64, I32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int32
