"""TensorRT 10 versus 11 versus RTX: real modules, trtexec lines, profiles, NVRTC, no-GPU errors.

The lean runtimes of TensorRT 10.16.1.11 and 11.4.0.106 are both the module `tensorrt_lean`,
so `make test` installs each into its own folder (.venv/trt-lean/10, /11) and every check on
them runs in a subprocess with that folder on the path. They import without a GPU; nothing
here constructs a Runtime (without a GPU that crashes the process on the next call).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from bld_runtime.engine_cache import BatchProfile
from bld_runtime.errors import InvalidRequestError
from bld_runtime.manifest import GraphSpec, TensorSpec

LEAN_ROOT = Path(os.environ.get("BLD_TRT_LEAN_ROOT", Path(sys.prefix) / "trt-lean"))

PROBE = textwrap.dedent("""
    import json, sys
    import tensorrt_lean as trt
    from bld_runtime.trt_flavours import Flavour
    from bld_runtime.backends.tensorrt import TRT_NAMES
    from bld_engines.builder import Builder, BuildOptions, SHARED_NAMES
    from bld_runtime.errors import BldError

    def resolve(path):
        obj = trt
        for part in path.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    f = Flavour("tensorrt", trt, "tensorrt_lean")
    out = {"version": f.version, "missing": [n for n in TRT_NAMES + SHARED_NAMES if not resolve(n)],
           "fp16_flag": f.builder_flag("FP16") is not None,
           "precision_flags": [n for n in ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4",
                               "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS")
                               if f.builder_flag(n) is not None],
           "numbers": {n: int(getattr(trt.BuilderFlag, n)) for n in ("VERSION_COMPATIBLE",
                                                                     "GPU_FALLBACK")},
           "device_memory_size": hasattr(trt.ICudaEngine, "device_memory_size")}
    for name, options in (("fp16_flag", BuildOptions(precision="fp16", fp16_flag=True)),
                          ("typed", BuildOptions(precision="fp16"))):
        try:
            Builder(f, options)
            out[name + "_builder"] = "built"
        except BldError as e:
            out[name + "_builder"] = type(e).__name__ + ": " + str(e)
    print(json.dumps(out))
""")


def lean(major: int, subprocess_env) -> dict:
    folder = LEAN_ROOT / str(major)
    if not (folder / "tensorrt_lean").is_dir():
        pytest.skip(f"tensorrt-lean-cu12 {major}.x is not installed in {folder} (make test does)")
    env = dict(subprocess_env)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env["PYTHONPATH"]])
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tensorrt_10_names_and_switches(subprocess_env):
    info = lean(10, subprocess_env)
    assert info["version"] == "10.16.1.11"
    assert info["missing"] == []
    assert info["fp16_flag"] and "OBEY_PRECISION_CONSTRAINTS" in info["precision_flags"]
    assert info["device_memory_size"]
    assert info["numbers"]["VERSION_COMPATIBLE"] == 13
    # FP16 flag accepted by the version check; then the GPU check says what is missing.
    for name in ("fp16_flag_builder", "typed_builder"):
        assert info[name].startswith(
            "BackendUnavailableError: tensorrt_lean 10.16.1.11 builds "
            "engines on a GPU and none is usable here"
        ), info[name]


def test_tensorrt_11_names_and_switches(subprocess_env):
    info = lean(11, subprocess_env)
    assert info["version"] == "11.4.0.106"
    assert info["missing"] == []
    assert not info["fp16_flag"] and info["precision_flags"] == []  # removed with weak typing
    assert not info["device_memory_size"]  # only the _v2 form is left
    assert info["numbers"]["VERSION_COMPATIBLE"] == 12  # why flags are stored by name
    assert info["fp16_flag_builder"].startswith(
        "InvalidRequestError: tensorrt_lean 11.4.0.106 has no FP16 builder flag"
    )
    assert info["typed_builder"].startswith("BackendUnavailableError: ")


def test_builder_names_exist_in_tensorrt_rtx():
    trt = pytest.importorskip("tensorrt_rtx")
    from bld_engines.builder import BUILDER_NAMES, RTX_NAMES, SHARED_NAMES
    from bld_runtime.backends.tensorrt import TRT_NAMES

    def resolve(path):
        obj = trt
        for part in path.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    missing = [n for n in TRT_NAMES + SHARED_NAMES + BUILDER_NAMES + RTX_NAMES if not resolve(n)]
    assert missing == []
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0  # 1 in TensorRT 10


# --- trtexec ---------------------------------------------------------------------------------

STEP = GraphSpec(
    file="step_fp16.onnx",
    sha256="0" * 64,
    precision="fp16",
    opset=17,
    flops=1,
    inputs=(
        TensorSpec("bits", "float32", ("batch", 256, 64)),
        TensorSpec("step", "int64", ("batch",)),
        TensorSpec("class_label", "int64", ("batch",)),
        TensorSpec("temperature", "float32", ("batch",)),
    ),
    outputs=(TensorSpec("probs", "float32", ("batch", 256, 64)),),
)


def line(**kwargs):
    from bld_engines.trtexec import trtexec_line

    defaults = dict(
        onnx="step_fp16.onnx",
        plan="step_fp16.plan",
        spec=STEP,
        profiles=(BatchProfile(1, 4, 16),),
        trt_version=10,
    )
    return trtexec_line(**{**defaults, **kwargs})


SHAPES = (
    "--minShapes=bits:1x256x64,step:1,class_label:1,temperature:1 "
    "--optShapes=bits:4x256x64,step:4,class_label:4,temperature:4 "
    "--maxShapes=bits:16x256x64,step:16,class_label:16,temperature:16"
)


def test_trtexec_10_line():
    assert line(
        timing_cache="orin.cache", dla_core=0, workspace_mib=2048, optimization_level=4
    ) == (
        f"trtexec --onnx=step_fp16.onnx --saveEngine=step_fp16.plan {SHAPES} --stronglyTyped "
        "--memPoolSize=workspace:2048M --builderOptimizationLevel=4 "
        "--timingCacheFile=orin.cache --useDLACore=0 --allowGPUFallback --useCudaGraph"
    )
    assert line(fp16_flag=True) == (
        f"trtexec --onnx=step_fp16.onnx --saveEngine=step_fp16.plan {SHAPES} --fp16 --useCudaGraph"
    )


def test_trtexec_11_line_has_no_precision_flags_and_cuda_graphs_by_default():
    text = line(
        trt_version=11, timing_cache="t.cache", hardware_compat="same-cc", version_compatible=True
    )
    assert text == (
        f"trtexec --onnx=step_fp16.onnx --saveEngine=step_fp16.plan {SHAPES} "
        "--timingCacheFile=t.cache --hardwareCompatibilityLevel=sameComputeCapability "
        "--versionCompatible"
    )
    for gone in ("--fp16", "--bf16", "--int8", "--best", "--stronglyTyped", "--useCudaGraph"):
        assert gone not in shlex.split(text)
    with pytest.raises(InvalidRequestError, match="trtexec 11 has no --fp16"):
        line(trt_version=11, fp16_flag=True)


def test_trtexec_for_jetpack6_refuses_hardware_compatibility():
    """JetPack 6's trtexec 10.3 has no sameComputeCapability, and TensorRT supports no
    hardware compatibility on Jetson at all: one clear refusal instead of a line it rejects."""
    assert line(trt_version="10.3") == line(trt_version=10)
    for level in ("ampere+", "same-cc"):
        with pytest.raises(
            InvalidRequestError, match="TensorRT does not support hardware compatibility on Jetson"
        ):
            line(trt_version="10.3", hardware_compat=level)
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in line(hardware_compat="same-cc")


def test_trtexec_several_profiles_are_numbered():
    args = shlex.split(line(profiles=(BatchProfile(1, 1, 4), BatchProfile(4, 16, 16))))
    profile_flags = [a for a in args if a.startswith("--profile=")]
    assert profile_flags == ["--profile=0", "--profile=1"]
    i = args.index("--profile=1")
    assert args[i + 1].startswith("--minShapes=bits:4x256x64")
    assert args[i + 3].startswith("--maxShapes=bits:16x256x64")


def test_cli_emits_trtexec_lines_without_tensorrt(tiny_bundle):
    from bld_export.cli import main

    result = CliRunner().invoke(
        main,
        [
            "engine",
            str(tiny_bundle),
            "--emit-trtexec",
            "--precision",
            "fp16",
            "--batch",
            "1:2:4",
            "--trt-version",
            "11",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [shlex.split(x)[1] for x in lines] == [
        "--onnx=encoder.onnx",
        "--onnx=decoder_fp16.onnx",
        "--onnx=step_fp16.onnx",
        "--onnx=step_guided_fp16.onnx",
    ]
    assert "guidance:4" in lines[-1]


def test_cli_refuses_hardware_compat_for_jetpack6_in_one_line(tiny_bundle):
    from bld_export.cli import main

    args = [str(tiny_bundle), "--emit-trtexec", "--trt-version", "10.3", "--batch", "1:2:4"]
    ok = CliRunner().invoke(main, ["engine", *args])
    assert ok.exit_code == 0, ok.output
    assert len(ok.output.strip().splitlines()) == 4
    refused = CliRunner().invoke(main, ["engine", *args, "--hardware-compat", "same-cc"])
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines() == [
        "error: --hardware-compat same-cc: TensorRT does not support hardware compatibility on "
        "Jetson (and trtexec 10.3 has no sameComputeCapability)"
    ]


# --- batch profiles --------------------------------------------------------------------------


def test_parse_batch():
    from bld_engines.profiles import input_shapes, parse_batch

    assert parse_batch("1:4:16") == BatchProfile(1, 4, 16)
    assert parse_batch(" 8 ") == BatchProfile(8, 8, 8)
    assert input_shapes(STEP, BatchProfile(2, 3, 5))["bits"] == (
        (2, 256, 64),
        (3, 256, 64),
        (5, 256, 64),
    )
    for text, message in (
        ("1:4", "MIN:OPT:MAX"),
        ("a:b:c", "MIN:OPT:MAX"),
        ("0:1:2", "at least 1"),
        ("4:2:8", "min <= opt <= max"),
        ("1:2:-3", "MIN:OPT:MAX"),
        ("", "MIN:OPT:MAX"),
    ):
        with pytest.raises(InvalidRequestError, match=message):
            parse_batch(text)
    with pytest.raises(InvalidRequestError, match="above the bundle's max_batch"):
        parse_batch("1:4:128", max_batch=64)


def test_guided_step_profile_is_on_the_input_batch(tiny_bundle):
    """The profile names the images' batch; the doubled batch exists only inside the graph."""
    from bld_engines.profiles import input_shapes
    from bld_runtime.manifest import load_bundle

    spec = load_bundle(tiny_bundle).manifest.graphs["step_guided"]
    shapes = input_shapes(spec, BatchProfile(1, 2, 4))
    assert {name: s[2][0] for name, s in shapes.items()} == {
        "bits": 4,
        "step": 4,
        "class_label": 4,
        "temperature": 4,
        "guidance": 4,
    }


# --- NVRTC and the no-GPU paths --------------------------------------------------------------


@pytest.mark.parametrize("cc", ["8.7", "9.0", "11.0"])
def test_nvrtc_compiles_the_device_kernels(cc):
    from bld_runtime.backends import cudart
    from bld_runtime.backends.kernels import KERNELS
    from bld_runtime.errors import BackendUnavailableError

    try:
        cuda = cudart.import_cuda()
        cuda.nvrtc.nvrtcVersion()
    except (BackendUnavailableError, Exception) as e:  # noqa: BLE001
        pytest.skip(f"NVRTC is not loadable here ({type(e).__name__}); make test installs it")
    image = cudart.compile_source(cuda, KERNELS, cc)
    assert image[:4] == b"\x7fELF" or b".entry bld_draw" in image
    assert b"bld_draw" in image and b"bld_threshold" in image


@pytest.mark.parametrize("cc", ["8.0", "8.7", "9.0"])
def test_nvrtc_builds_a_cubin_for_the_devices_own_sm(cc):
    """A100 (sm_80), Orin (sm_87), H100 (sm_90): the draw kernels become a cubin for exactly
    that SM (ELF, machine EM_CUDA, the SM in its flags), never PTX for the driver to JIT, which
    a driver older than NVRTC refuses (CUDA_ERROR_UNSUPPORTED_PTX_VERSION)."""
    import struct

    from bld_runtime.backends import cudart
    from bld_runtime.backends.kernels import KERNELS

    try:
        cuda = cudart.import_cuda()
        cuda.nvrtc.nvrtcVersion()
    except Exception as e:  # noqa: BLE001 - no cuda-python or libnvrtc here
        pytest.skip(f"NVRTC is not loadable here ({type(e).__name__}); make test installs it")
    image = cudart.compile_source(cuda, KERNELS, cc)
    assert image[:4] == b"\x7fELF", image[:40]
    assert image[4] == 2  # ELF64
    (machine,) = struct.unpack_from("<H", image, 18)
    (flags,) = struct.unpack_from("<I", image, 48)
    sm = int(cc.replace(".", ""))
    assert machine == 190  # EM_CUDA
    assert flags & 0xFF == sm and (flags >> 16) & 0xFF == sm, hex(flags)  # SM and virtual arch
    for name in (b"bld_draw", b"bld_threshold"):
        assert name in image


BLOCK = "import sys; [sys.modules.__setitem__(m, None) for m in {mods!r}]; "


def run_blocked(modules, args, env):
    code = (
        BLOCK.format(mods=list(modules))
        + f"sys.argv = {args!r}; "
        + (
            "from bld_export.cli import main; main()"
            if args[0] == "bld-export"
            else "from bld_runtime.cli import main; main()"
        )
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def one_line_error(done, message):
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in lines[0], lines[0]


TRT_MODULES = ("tensorrt", "tensorrt_lean", "tensorrt_rtx")
CUDA_MODULES = ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart")


def test_engine_build_without_tensorrt_says_what_is_missing(tiny_bundle, tmp_path, subprocess_env):
    done = run_blocked(
        TRT_MODULES,
        ["bld-export", "engine", str(tiny_bundle), "-o", str(tmp_path / "c")],
        subprocess_env,
    )
    one_line_error(done, "a TensorRT builder is not importable here: tensorrt (")
    assert "pip install 'bld[tensorrt-rtx]'" in done.stderr


def test_bld_export_without_bld_engines_lists_and_refuses_its_commands(tiny_bundle, subprocess_env):
    help_text = run_blocked(("bld_engines",), ["bld-export", "--help"], subprocess_env)
    assert help_text.returncode == 0, help_text.stderr
    assert "engine   (needs bld_engines, not installed)" in help_text.stdout
    assert "onnx     Export RUN_DIR" in help_text.stdout
    done = run_blocked(("bld_engines",), ["bld-export", "engine", str(tiny_bundle)], subprocess_env)
    one_line_error(
        done, "`bld-export engine` comes from bld_engines.cli, which cannot be imported here"
    )


def test_sample_with_tensorrt_backend_without_gpu_or_cuda_python(
    tiny_bundle, tmp_path, subprocess_env
):
    args = ["bld", "sample", str(tiny_bundle), "-o", str(tmp_path / "out"), "--backend", "tensorrt"]
    no_cuda = run_blocked(CUDA_MODULES, args, subprocess_env)
    one_line_error(no_cuda, "needs cuda-python, which is not installed")
    pytest.importorskip("cuda.bindings.runtime")
    no_gpu = run_blocked((), args, subprocess_env)
    one_line_error(no_gpu, "no CUDA GPU is usable here: cudaGetDeviceCount returned")
    assert not (tmp_path / "out").exists()


def test_doctor_reports_what_actually_starts(tiny_bundle, subprocess_env):
    done = subprocess.run(
        [sys.executable, "-m", "bld_export.cli", "doctor", "--bundle", str(tiny_bundle)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "CPUExecutionProvider        starts" in out
    assert "GPU           none usable" in out
    assert "engine check  skipped: no GPU here" in out
    for module in TRT_MODULES:
        assert module in out


def test_gpu_check_dry_run_runs_what_needs_no_gpu():
    """benchmarks/gpu_check.sh --dry-run: its numpy references, the NVRTC compile of its
    kernels (where cuda-python and NVRTC load) and the nvcc build of the cuRAND helper (where
    nvcc and cuRAND's headers exist). The GPU part has to run on a GPU machine."""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ok] numpy references run" in done.stdout
    assert "[FAIL]" not in done.stdout
    try:
        from bld_runtime.backends import cudart

        cudart.import_cuda().nvrtc.nvrtcVersion()
    except Exception:  # noqa: BLE001 - no cuda-python or libnvrtc here
        return
    assert "[ok] NVRTC compiles the check kernels for sm_87" in done.stdout


def _hanging_python(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for python that writes its pid to a file and sleeps (a part that hangs)."""
    pids = tmp_path / "pids"
    hang = tmp_path / "hang"
    hang.write_text(f"#!/bin/sh\necho $$ >> {shlex.quote(str(pids))}\nexec sleep 600\n")
    hang.chmod(0o755)
    return hang, pids


def _gone(pid: int, within: float = 15.0) -> bool:
    """True once `pid` no longer runs (reaped, or a zombie no one has reaped yet)."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_gpu_check_summary_survives_a_killed_part(tmp_path):
    """Each part of gpu_check.sh runs under its own timeout; a part killed mid-way (an engine
    build, say) is reported as killed and the summary line still comes last. The C++ part is
    skipped without the TensorRT SDK (or killed as well where this machine has one)."""
    repo = Path(__file__).resolve().parents[1]
    hang, _ = _hanging_python(tmp_path)
    done = subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--bundle", "b"],
        env={
            **os.environ,
            "PYTHON": str(hang),
            "GPU_CHECK_CUDA_TIMEOUT": "1",
            "GPU_CHECK_RUNTIMES_TIMEOUT": "1",
            "GPU_CHECK_CPP_TIMEOUT": "1",
            "TENSORRT_ROOT": str(tmp_path / "no-sdk"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert lines[-4:-2] == [
        "part cuda: KILLED after its 1s timeout (its results above are partial)",
        "part gpu-runtimes: KILLED after its 1s timeout (its results above are partial)",
    ]
    assert lines[-2] in (
        "part cpp-tensorrt: KILLED after its 1s timeout (its results above are partial)",
        "part cpp-tensorrt: skipped (no TensorRT SDK (NvInfer.h and libnvinfer.so under "
        f"$TENSORRT_ROOT={tmp_path / 'no-sdk'} or /usr); set TENSORRT_ROOT to run it)",
    ), lines[-2]
    assert lines[-1] in (
        "gpu_check: 0 parts passed, 3 failed",
        "gpu_check: 0 parts passed, 2 failed, 1 skipped",
    )


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_gpu_check_stopped_mid_part_prints_the_summary(tmp_path, signal_name):
    """A SIGTERM (or Ctrl-C's SIGINT) sent to gpu_check.sh while a part runs stops that part
    at once (not when its timeout ends), its process is gone, and the summary still prints."""
    import signal
    import time

    repo = Path(__file__).resolve().parents[1]
    hang, pids = _hanging_python(tmp_path)
    # bash cannot trap a signal ignored when it starts, and a test run started in the background
    # (`make test &`) ignores SIGINT: start the script as a terminal would, SIGINT at default.
    default_sigint = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    default_sigint += "os.execvp('bash', ['bash', sys.argv[1]])"
    proc = subprocess.Popen(
        [sys.executable, "-c", default_sigint, str(repo / "benchmarks" / "gpu_check.sh")],
        env={**os.environ, "PYTHON": str(hang), "GPU_CHECK_CUDA_TIMEOUT": "300"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # nothing of it outlives the test if it fails
    )
    try:
        deadline = time.monotonic() + 60
        while not (pids.is_file() and pids.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        part_pid = int(pids.read_text().split()[0])
        start = time.monotonic()
        proc.send_signal(getattr(signal, signal_name))
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out + err
    assert took < 20, f"the script took {took:.0f}s to stop"
    assert out.strip().splitlines()[-2:] == [
        f"part cuda: interrupted by {signal_name} (its results above are partial)",
        "gpu_check: 0 parts passed, 1 failed",
    ]
    assert "== part gpu-runtimes" not in out  # stopped: no part after it starts
    assert _gone(part_pid), f"the part's process {part_pid} still runs"
    assert pids.read_text().split() == [str(part_pid)]


def test_gpu_check_budget_sizes_the_parts(tmp_path):
    """--budget S: each part's timeout is its share of what is left, so the whole check ends
    within S seconds (a 600 s device run); a GPU_CHECK_*_TIMEOUT that is set caps its part."""
    repo = Path(__file__).resolve().parents[1]
    fake = tmp_path / "fake"  # every part exits at once
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "TENSORRT_ROOT": str(tmp_path / "no-sdk")}
    env.pop("GPU_CHECK_CUDA_TIMEOUT", None)
    env.pop("GPU_CHECK_RUNTIMES_TIMEOUT", None)
    script = str(repo / "benchmarks" / "gpu_check.sh")
    done = subprocess.run(
        ["bash", script, "--budget", "570"], env=env, capture_output=True, text=True, timeout=60
    )
    limits = [
        int(line.split("timeout ")[1].rstrip("s)"))
        for line in done.stdout.splitlines()
        if line.startswith("== part") and "timeout" in line
    ]
    assert len(limits) in (2, 3), done.stdout  # (c) skipped without the SDK
    # Each part, killed at its timeout plus the 10 s grace, leaves the grace of those after it
    # (these parts end at once, so what they leave goes on to the next: 2 : 1 over (a)).
    for i, limit in enumerate(limits):
        assert limit + 10 * (len(limits) - i) <= 570, limits
    assert 100 <= limits[0] < limits[1], limits
    done = subprocess.run(
        ["bash", script, "--budget=570"],
        env={**env, "GPU_CHECK_CUDA_TIMEOUT": "30"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "== part cuda (timeout 30s)" in done.stdout, done.stdout
    bad = subprocess.run(
        ["bash", script, "--budget", "ten"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "--budget must be a whole number" in bad.stderr


def test_on_jetson_reads_the_device_tree_when_l4t_release_is_missing(tmp_path, monkeypatch):
    """/etc/nv_tegra_release, else "nvidia,tegra..." among the device tree's NUL-separated
    compatible strings; anything else (missing, a PC's board, a folder) is not a Jetson."""
    from bld_runtime import trt_flavours

    monkeypatch.setattr(trt_flavours, "JETSON_RELEASE_FILE", tmp_path / "no-release")
    compatible = tmp_path / "compatible"
    monkeypatch.setattr(trt_flavours, "DEVICE_TREE_COMPATIBLE", compatible)
    assert not trt_flavours.on_jetson()  # neither file
    compatible.write_bytes(b"nvidia,p3768-0000+p3767-0005\0nvidia,p3767-0005\0nvidia,tegra234\0")
    assert trt_flavours.on_jetson()
    compatible.write_bytes(b"raspberrypi,5-model-b\0brcm,bcm2712\0")
    assert not trt_flavours.on_jetson()
    compatible.write_bytes(b"x" * (trt_flavours.DEVICE_TREE_READ_LIMIT + 10) + b"\0nvidia,tegra")
    assert not trt_flavours.on_jetson()  # read bounded: beyond the limit is not looked at
    compatible.unlink()
    compatible.mkdir()
    assert not trt_flavours.on_jetson()
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3\n")
    monkeypatch.setattr(trt_flavours, "JETSON_RELEASE_FILE", release)
    assert trt_flavours.on_jetson()


def test_trt_context_refusals_raise_and_creation_holds_the_lock():
    """set_optimization_profile_async and set_input_shape return False when TensorRT refuses:
    TrtEngine.context raises StaleEngineError in one sentence instead of running on; and the
    shared engine's create_execution_context runs under the backend's lock."""
    import threading

    from bld_runtime.backends.tensorrt import TrtEngine
    from bld_runtime.errors import StaleEngineError

    lock = threading.RLock()
    refuse: set[str] = set()
    held: list[bool] = []

    class Context:
        def set_optimization_profile_async(self, profile, stream):
            return "profile" not in refuse

        def set_input_shape(self, name, shape):
            return "shape" not in refuse

        def set_device_memory(self, ptr, nbytes):
            pass

    class Engine:
        def create_execution_context(self, strategy):
            free: list[bool] = []  # can another thread take the lock now?
            other = threading.Thread(target=lambda: free.append(lock.acquire(blocking=False)))
            other.start()
            other.join()
            held.append(not free[0])
            return Context()

    class Backend:
        _lock = lock
        trt = type(
            "trt",
            (),
            {"ExecutionContextAllocationStrategy": type("S", (), {"USER_MANAGED": 2})},
        )

        def rebuild_hint(self):
            return "bld-export engine BUNDLE"

    engine = object.__new__(TrtEngine)
    engine.backend, engine.engine = Backend(), Engine()
    engine.entry = type("E", (), {"plan_path": "c/step/x.plan", "key": None})()
    engine.spec = type("G", (), {"inputs": (TensorSpec("bits", "float32", ("batch", 4, 2)),)})()
    engine.batch_ranges = [(1, 4)]
    scratch = type("B", (), {"ptr": 0, "nbytes": 0})()
    assert engine.context(2, 0, scratch) is not None
    assert held == [True]
    refuse.add("shape")
    with pytest.raises(StaleEngineError, match=r"refused input bits of shape \(2, 4, 2\)"):
        engine.context(2, 0, scratch)
    refuse.add("profile")
    with pytest.raises(StaleEngineError, match="refused optimization profile 0 for batch 2"):
        engine.context(2, 0, scratch)


def test_bld_engines_imports_neither_torch_nor_bld_train(subprocess_env):
    """bld_engines builds on bld_runtime alone: statically, and loading its CLI and builder."""
    import ast

    repo = Path(__file__).resolve().parents[1]
    bad = []
    for path in sorted((repo / "engines" / "bld_engines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            bad += [
                f"{path.name}: {n}"
                for n in names
                if n and n.split(".")[0] in ("torch", "bld_train", "bld_export")
            ]
    assert bad == []
    code = (
        "import sys, bld_engines.cli, bld_engines.builder, bld_engines.doctor; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'bld_train', 'bld_export')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tensorrt_ep_gets_the_cache_timing_cache_and_profiles(tiny_bundle, tmp_path):
    """The onnxruntime TensorRT EP's options (no GPU needed to compute them)."""
    from bld_runtime.backends import BackendOptions
    from bld_runtime.backends.cuda import tensorrt_ep_providers, tensorrt_provider_options
    from bld_runtime.manifest import load_bundle

    options = BackendOptions(
        trt_cache_dir=str(tmp_path / "engines"), trt_timing_cache=str(tmp_path / "t" / "bld.timing")
    )
    opts = tensorrt_provider_options(options)
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "engines" / "onnxruntime-trt-ep")
    assert (opts["trt_timing_cache_enable"], opts["trt_timing_cache_path"]) == (
        "True",
        str(tmp_path / "t"),
    )
    m = load_bundle(tiny_bundle).manifest
    (name, ep), _ = tensorrt_ep_providers(m.graphs["step_guided"], 8, options)
    assert name == "TensorrtExecutionProvider"
    L, C = m.latent.shape
    assert ep["trt_profile_min_shapes"] == (
        f"bits:1x{L}x{C},step:1,class_label:1,temperature:1,guidance:1"
    )
    assert ep["trt_profile_max_shapes"].startswith(f"bits:8x{L}x{C},step:8,")
