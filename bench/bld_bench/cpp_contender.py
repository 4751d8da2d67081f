"""`bld bench --backend cpp`: the C++ runtime (libbld) timed in the same run as the others.

`bld-cpp bench` times the C++ loop on its own; comparing it with PyTorch from another process
mixes in the drift between processes (up to 40% on a shared 2-core VM). This contender calls
the library's C ABI (bld.h) through ctypes, so it takes its turn in `bld bench`'s A B A B rounds
like every other backend. Stage times are the library's own profile (bld_request_set_profile):
initial, each step call's graph and draw, decode, measured inside C++; ctypes' per-call cost
lands in the total only, as the Python runtime's argument checks do.

The library: $BLD_LIBRARY (a path to libbld.so), else the checkout's runtime/cpp/build (what
`make cpp` builds, for an editable install), else the system's (ctypes.util.find_library).
Precisions are the library's: fp32, fp16 (the bundle's *_fp16 graphs); it refuses others in
the Python runtime's sentence, which is reported as the contender's reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import numpy as np

from bld_runtime.errors import BackendUnavailableError, BldError

from .core import BenchBackend, Request, StageClock

CHECKOUT_LIBRARY = Path(__file__).resolve().parents[2] / "runtime" / "cpp" / "build" / "libbld.so"

_p = ctypes.c_void_p


class _Profile(ctypes.Structure):  # bld_profile
    _fields_ = [
        ("total", ctypes.c_double),
        ("initial", ctypes.c_double),
        ("decode", ctypes.c_double),
        ("steps", ctypes.c_size_t),
        ("step_model", ctypes.POINTER(ctypes.c_double)),
        ("step_sampling", ctypes.POINTER(ctypes.c_double)),
    ]


_INFO_INTEGERS = "image_height image_width image_channels latent_height latent_width latent_bits "
_INFO_INTEGERS += "num_classes num_steps max_batch"


class _Info(ctypes.Structure):  # bld_pipeline_info
    _fields_ = [(name, ctypes.c_int64) for name in _INFO_INTEGERS.split()] + [
        ("default_guidance", ctypes.c_double),
        ("default_temperature", ctypes.c_double),
    ]


# name -> (restype, argtypes): the part of bld.h this contender calls
_SIGNATURES = {
    "bld_status_message": (ctypes.c_char_p, [_p]),
    "bld_status_free": (None, [_p]),
    "bld_options_create": (_p, [ctypes.POINTER(_p)]),
    "bld_options_set": (_p, [_p, ctypes.c_char_p, ctypes.c_char_p]),
    "bld_options_free": (None, [_p]),
    "bld_pipeline_load": (_p, [ctypes.c_char_p, _p, ctypes.POINTER(_p)]),
    "bld_pipeline_free": (None, [_p]),
    "bld_pipeline_get_info": (None, [_p, ctypes.POINTER(_Info)]),
    "bld_request_create": (_p, [ctypes.POINTER(_p)]),
    "bld_request_free": (None, [_p]),
    "bld_request_set_seeds": (_p, [_p, _p, ctypes.c_size_t]),
    "bld_request_set_classes": (_p, [_p, _p, ctypes.c_size_t]),
    "bld_request_set_guidance": (_p, [_p, _p, ctypes.c_size_t]),
    "bld_request_set_temperature": (_p, [_p, _p, ctypes.c_size_t]),
    "bld_request_set_profile": (_p, [_p, ctypes.c_int]),
    "bld_pipeline_generate": (_p, [_p, _p, ctypes.POINTER(_p)]),
    "bld_generation_free": (None, [_p]),
    "bld_generation_images": (_p, [_p, ctypes.POINTER(ctypes.c_size_t)]),
    "bld_generation_get_profile": (ctypes.c_int, [_p, ctypes.POINTER(_Profile)]),
}


def find_library() -> Path:
    """libbld.so: $BLD_LIBRARY, the checkout's build, or the system's; else unavailable."""
    named = os.environ.get("BLD_LIBRARY")
    if named:
        if not Path(named).is_file():
            raise BackendUnavailableError(f"BLD_LIBRARY is {named!r}, which is not a file")
        return Path(named)
    if CHECKOUT_LIBRARY.is_file():
        return CHECKOUT_LIBRARY
    found = ctypes.util.find_library("bld")
    if found is None:
        raise BackendUnavailableError(
            "backend 'cpp' needs the C++ runtime's libbld.so: build it with `make cpp` or set "
            "BLD_LIBRARY to its path"
        )
    return Path(found)


class CppBackend(BenchBackend):
    """The C++ runtime's Pipeline on the bundle, through the C ABI."""

    name = "cpp"
    kind = "runtime"

    def __init__(
        self,
        bundle_dir,
        threads: int,
        precision: str = "fp32",
        thread_pool: str = "session",
        pin_threads: bool = False,
    ):
        self.threads = threads
        self.lib = ctypes.CDLL(str(find_library()))
        for fn, (restype, argtypes) in _SIGNATURES.items():
            getattr(self.lib, fn).restype = restype
            getattr(self.lib, fn).argtypes = argtypes
        options = _p()
        self._check(self.lib.bld_options_create(ctypes.byref(options)))
        try:
            settings = {
                "precision": precision,
                "intra_op_threads": str(threads),
                "thread_pool": thread_pool,
                "pin_threads": "true" if pin_threads else "false",
            }
            for key, value in settings.items():
                self._check(self.lib.bld_options_set(options, key.encode(), value.encode()))
            self.pipeline = _p()
            status = self.lib.bld_pipeline_load(
                str(bundle_dir).encode(), options, ctypes.byref(self.pipeline)
            )
            if status:  # a bundle or precision the library cannot run: the contender's reason
                raise BackendUnavailableError(self._message(status))
        finally:
            self.lib.bld_options_free(options)
        info = _Info()
        self.lib.bld_pipeline_get_info(self.pipeline, ctypes.byref(info))
        self.image = (info.image_height, info.image_width, info.image_channels)

    def _message(self, status) -> str:
        message = self.lib.bld_status_message(status).decode()
        self.lib.bld_status_free(status)
        return message

    def _check(self, status) -> None:
        if status:
            raise BldError(self._message(status))

    def generate(self, request: Request, clock: StageClock) -> np.ndarray:
        lib, n = self.lib, request.batch
        seeds = np.ascontiguousarray(request.seeds, np.uint64)
        classes = np.ascontiguousarray(request.classes, np.int64)
        guidance = np.array([request.guidance], np.float64)
        temperature = np.array([request.temperature], np.float64)
        req, gen = _p(), _p()
        self._check(lib.bld_request_create(ctypes.byref(req)))
        try:
            self._check(lib.bld_request_set_seeds(req, seeds.ctypes.data, n))
            self._check(lib.bld_request_set_classes(req, classes.ctypes.data, n))
            self._check(lib.bld_request_set_guidance(req, guidance.ctypes.data, 1))
            self._check(lib.bld_request_set_temperature(req, temperature.ctypes.data, 1))
            self._check(lib.bld_request_set_profile(req, 1))
            self._check(lib.bld_pipeline_generate(self.pipeline, req, ctypes.byref(gen)))
            profile = _Profile()
            if not lib.bld_generation_get_profile(gen, ctypes.byref(profile)):
                raise BldError("the C++ runtime returned no profile for a profiled request")
            K = clock.num_steps
            for call in range(profile.steps):  # K calls per chunk: add chunks up per step
                clock.model[call % K] += profile.step_model[call]
                clock.sampling[call % K] += profile.step_sampling[call]
            clock.initial, clock.decode = profile.initial, profile.decode
            size = ctypes.c_size_t()
            data = lib.bld_generation_images(gen, ctypes.byref(size))
            pixels = (ctypes.c_uint8 * size.value).from_address(data)
            return np.ctypeslib.as_array(pixels).reshape((n, *self.image)).copy()
        finally:
            lib.bld_generation_free(gen)
            lib.bld_request_free(req)

    def __del__(self):
        pipeline = getattr(self, "pipeline", None)
        if pipeline:
            self.lib.bld_pipeline_free(pipeline)
