"""trtexec command lines for building a bundle's engines ON the device (Jetson, a server).

The same graphs, profiles and options as `bld-export engine`, spelled for trtexec 10 or 11:

    10: --stronglyTyped for the fp16 graphs, or --fp16 on the fp32 graphs (weak typing,
        JetPack 6's 10.3); CUDA graphs are off unless --useCudaGraph.
    10.3: JetPack 6's, the same as 10; hardware compatibility is refused, since TensorRT has
        none on Jetson (and trtexec 10.3 has no sameComputeCapability level).
    11: strong typing is the only typing (no --fp16/--bf16/--int8/--best, no --stronglyTyped
        needed); CUDA graphs are on unless --noCudaGraph.

Profiles: --profile=N before each min/opt/max set (TensorRT 10 trtexec's multiple-profile
syntax); one profile needs no --profile. The plans it saves are brought into a cache with
`bld-export engine import PLAN --bundle B --graph NAME ...`, which checks their header.
"""

from __future__ import annotations

import shlex

from bld_runtime.engine_cache import BatchProfile
from bld_runtime.errors import InvalidRequestError
from bld_runtime.manifest import GraphSpec

from .profiles import input_shapes, shape_text

TRT_VERSIONS = ("10", "10.3", "11")  # 10.3: JetPack 6 (Jetson Orin)
HW_COMPAT_TRTEXEC = {"ampere+": "ampere+", "same-cc": "sameComputeCapability"}


def trtexec_args(
    onnx: str,
    plan: str,
    spec: GraphSpec,
    profiles: tuple[BatchProfile, ...],
    trt_version: int | str,
    fp16_flag: bool = False,
    dla_core: int | None = None,
    timing_cache: str | None = None,
    workspace_mib: int | None = None,
    optimization_level: int | None = None,
    hardware_compat: str = "none",
    version_compatible: bool = False,
) -> list[str]:
    """The argument list (without the program name) for one graph."""
    if str(trt_version) not in TRT_VERSIONS:
        raise InvalidRequestError(
            f"--trt-version must be one of {', '.join(TRT_VERSIONS)}, got {trt_version}"
        )
    jetpack6, trt_version = str(trt_version) == "10.3", int(str(trt_version).split(".")[0])
    if jetpack6 and hardware_compat != "none":
        raise InvalidRequestError(
            f"--hardware-compat {hardware_compat}: TensorRT does not support hardware "
            f"compatibility on Jetson (and trtexec 10.3 has no sameComputeCapability)"
        )
    if fp16_flag and trt_version >= 11:
        raise InvalidRequestError(
            "trtexec 11 has no --fp16 (TensorRT 11 removed weak typing): "
            "use the strongly typed fp16 graphs (--precision fp16)"
        )
    args = [f"--onnx={onnx}", f"--saveEngine={plan}"]
    for i, profile in enumerate(profiles):
        if len(profiles) > 1:
            args.append(f"--profile={i}")
        shapes = input_shapes(spec, profile)
        for j, which in enumerate(("min", "opt", "max")):
            args.append(
                f"--{which}Shapes="
                + ",".join(f"{name}:{shape_text(s[j])}" for name, s in shapes.items())
            )
    if trt_version == 10:
        args.append("--fp16" if fp16_flag else "--stronglyTyped")
    if workspace_mib is not None:
        args.append(f"--memPoolSize=workspace:{workspace_mib}M")
    if optimization_level is not None:
        args.append(f"--builderOptimizationLevel={optimization_level}")
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    if hardware_compat != "none":
        args.append(f"--hardwareCompatibilityLevel={HW_COMPAT_TRTEXEC[hardware_compat]}")
    if version_compatible:
        args.append("--versionCompatible")
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    # The timing run after the build: measure what the runtime does (one CUDA graph).
    if trt_version == 10:
        args.append("--useCudaGraph")
    return args


def trtexec_line(*args, **kwargs) -> str:
    return shlex.join(["trtexec", *trtexec_args(*args, **kwargs)])


__all__ = ["TRT_VERSIONS", "trtexec_args", "trtexec_line"]
