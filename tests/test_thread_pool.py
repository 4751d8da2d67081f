"""thread_pool="shared": one onnxruntime pool for the process, same bits as pools per session.

onnxruntime allows one shared pool per process and then refuses sessions with their own, so
every shared-pool run here is a fresh Python process (the test process keeps its own pools).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bld_runtime.backends import BackendOptions
from bld_runtime.errors import InvalidRequestError
from bld_runtime.pipeline import Pipeline

SEEDS, CLASSES = list(range(40, 46)), [0, 1, 2, 3, 4, 5]


def run_python(code: str, probe: bool = False) -> subprocess.CompletedProcess:
    """Run `code` (indented as here) in a fresh Python; with probe, after _AFFINITY_PROBE."""
    source = (_AFFINITY_PROBE if probe else "") + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, check=False
    )


# What the pinning tests run first in their process: a thread's CPUs as /proc shows them, and
# `polling(task, seen)`, a block during which another thread records the CPUs of thread `task`.
_AFFINITY_PROBE = """
import contextlib, threading

def allowed(task):
    status = open(f"/proc/self/task/{task}/status").read()
    return status.split("Cpus_allowed_list:")[1].split()[0]

@contextlib.contextmanager
def polling(task, seen):
    done = threading.Event()
    def poll():
        while not done.is_set():
            seen.add(allowed(task))
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield
    finally:
        done.set()
        poller.join()
"""


def test_shared_pool_gives_the_same_bits_and_pixels(tiny_bundle, tmp_path):
    out = tmp_path / "shared.npz"
    done = run_python(
        f"""
        import numpy as np
        from bld_runtime.backends import BackendOptions
        from bld_runtime.pipeline import Pipeline
        options = BackendOptions(intra_op_threads=2, thread_pool="shared")
        gen = Pipeline.load({str(tiny_bundle)!r}, options=options).generate(
            seeds={SEEDS}, classes={CLASSES}, guidance=1.5)
        np.savez({str(out)!r}, bits=gen.bits, images=gen.images)
        """
    )
    assert done.returncode == 0, done.stderr
    want = Pipeline.load(tiny_bundle).generate(seeds=SEEDS, classes=CLASSES, guidance=1.5)
    got = np.load(out)
    np.testing.assert_array_equal(got["bits"], want.bits)
    np.testing.assert_array_equal(got["images"], want.images)


def test_a_process_with_a_shared_pool_refuses_other_pools_in_one_sentence(tiny_bundle):
    done = run_python(
        f"""
        from bld_runtime.backends import BackendOptions
        from bld_runtime.errors import InvalidRequestError
        from bld_runtime.pipeline import Pipeline
        Pipeline.load({str(tiny_bundle)!r}, options=BackendOptions(
            intra_op_threads=1, thread_pool="shared"))
        for options in (BackendOptions(intra_op_threads=1),
                        BackendOptions(intra_op_threads=2, thread_pool="shared")):
            try:
                Pipeline.load({str(tiny_bundle)!r}, options=options)
            except InvalidRequestError as e:
                print(e)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "this process has a shared onnxruntime thread pool (thread_pool='shared'), and "
        "onnxruntime then refuses sessions with pools of their own: use thread_pool='shared' "
        "here too",
        "this process's shared onnxruntime thread pool has 1 intra-op and 1 inter-op threads, "
        "and onnxruntime has one per process: ask for the same, not 2 and 1",
    ]


def assert_sample_writes_the_same_files_with_either_pool(sample: list, bundle, out) -> None:
    """`SAMPLE BUNDLE ... --thread-pool session` and `... shared` (bld or bld-cpp sample)."""
    for pool in ("session", "shared"):
        done = subprocess.run(
            [*sample, bundle, "-n", "5", "--seed", "9", "-o", out / pool, "--thread-pool", pool],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    for name in ("bits.bldz", "grid.png", "00000.png", "00004.png"):
        session, shared = (out / pool / name for pool in ("session", "shared"))
        assert session.read_bytes() == shared.read_bytes(), name


def test_bld_sample_thread_pool_shared_writes_the_same_files(tiny_bundle, tmp_path):
    bld = [sys.executable, "-m", "bld_runtime.cli", "sample"]
    assert_sample_writes_the_same_files_with_either_pool(bld, tiny_bundle, tmp_path)


def test_an_unknown_thread_pool_is_refused():
    with pytest.raises(InvalidRequestError, match="thread_pool must be one of shared, session"):
        BackendOptions(thread_pool="global")


def test_the_cli_defaults_to_the_shared_pool_and_bld_thread_pool_chooses(tiny_bundle, tmp_path):
    """`bld sample` owns its process, so it shares one pool unless $BLD_THREAD_POOL says
    session: seen from the same process, where a later per-session pipeline is refused."""
    code = f"""
        from click.testing import CliRunner
        from bld_runtime.cli import cli
        from bld_runtime.errors import InvalidRequestError
        from bld_runtime.pipeline import Pipeline
        done = CliRunner().invoke(cli, ["sample", {str(tiny_bundle)!r}, "-o", {str(tmp_path)!r},
                                        "--force"])
        assert done.exit_code == 0, done.output
        try:
            Pipeline.load({str(tiny_bundle)!r})
            print("session pools allowed")
        except InvalidRequestError:
            print("shared pool")
        """
    env = {k: v for k, v in os.environ.items() if k != "BLD_THREAD_POOL"}
    for value, want in ((None, "shared pool"), ("session", "session pools allowed")):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True, text=True, check=False,
            env=env if value is None else {**env, "BLD_THREAD_POOL": value},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == want


# --- the C++ runtime: the same option, its environment made by the first pipeline -------------


def test_cpp_shared_pool_gives_the_same_files(cpp_build, tiny_bundle, tmp_path):
    bld_cpp = [cpp_build["release"] / "bld-cpp", "sample"]
    assert_sample_writes_the_same_files_with_either_pool(bld_cpp, tiny_bundle, tmp_path)


def test_cpp_refuses_a_shared_pool_its_environment_cannot_have(cpp_build, tiny_bundle):
    code = f"""
        import os
        os.environ["BLD_LIBRARY"] = {str(cpp_build["release"] / "libbld.so")!r}
        from bld_bench.cpp_contender import CppBackend
        from bld_runtime.errors import BackendUnavailableError
        def load(pool, threads):
            try:
                CppBackend({str(tiny_bundle)!r}, threads, thread_pool=pool)
                print("loaded", pool, threads)
            except BackendUnavailableError as e:
                print(e)
        for pool, threads in {{argv}}:
            load(pool, threads)
        """
    cases = {
        "[('shared', 1), ('shared', 2), ('session', 2), ('shared', 1)]": [
            "loaded shared 1",
            "this process's shared onnxruntime thread pool has 1 intra-op and 1 inter-op threads, "
            "and onnxruntime has one per process: ask for the same, not 2 and 1",
            "loaded session 2",
            "loaded shared 1",
        ],
        "[('session', 1), ('shared', 1)]": [
            "loaded session 1",
            "this process's onnxruntime environment has no shared thread pool (a pipeline with "
            "thread_pool 'session' was loaded first), and onnxruntime has one environment per "
            "process: load the shared pipeline first",
        ],
    }
    for argv, want in cases.items():
        done = run_python(code.replace("{argv}", argv))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == want


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 usable cores")
def test_cpp_pin_threads_pins_the_pool_and_the_caller_and_keeps_the_bits(cpp_build, tiny_bundle):
    """pin_threads: the shared pool's other thread on the second usable CPU, the generating
    thread on the first during the call (seen by a thread polling it) and given back its CPUs
    after it; the images of a pipeline with pools per session."""
    code = f"""
        import os, threading, numpy as np
        os.environ["BLD_LIBRARY"] = {str(cpp_build["release"] / "libbld.so")!r}
        from bld_bench.core import Request, StageClock
        from bld_bench.cpp_contender import CppBackend
        cpus, me = sorted(os.sched_getaffinity(0)), threading.get_native_id()
        before = {{t: allowed(t) for t in os.listdir("/proc/self/task")}}
        pinned = CppBackend({str(tiny_bundle)!r}, 2, thread_pool="shared", pin_threads=True)
        new = {{t: allowed(t) for t in os.listdir("/proc/self/task") if t not in before}}
        request = Request(seeds=np.arange(256, dtype=np.uint64), classes=np.arange(256) % 10,
                          guidance=1.5, temperature=1.0)
        seen = set()
        with polling(me, seen):
            images = pinned.generate(request, StageClock(8))
        plain = CppBackend({str(tiny_bundle)!r}, 2).generate(request, StageClock(8))
        print(str(cpus[1]) in new.values(), str(cpus[0]) in seen,
              sorted(os.sched_getaffinity(0)) == cpus, np.array_equal(images, plain))
        """
    done = run_python(code, probe=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "True"]


def test_cpp_pin_threads_refusals(cpp_build, tiny_bundle):
    code = f"""
        import os
        os.environ["BLD_LIBRARY"] = {str(cpp_build["release"] / "libbld.so")!r}
        from bld_bench.cpp_contender import CppBackend
        from bld_runtime.errors import BackendUnavailableError
        for pool, threads in (("session", 1), ("shared", len(os.sched_getaffinity(0)) + 1)):
            try:
                CppBackend({str(tiny_bundle)!r}, threads, thread_pool=pool, pin_threads=True)
            except BackendUnavailableError as e:
                print(e)
        """
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    cores = len(os.sched_getaffinity(0))
    assert done.stdout.splitlines() == [
        "pin_threads needs thread_pool 'shared': it pins the shared pool's threads",
        f"pin_threads needs a usable core for each of the {cores + 1} intra-op threads, and this "
        f"process may use {cores}",
    ]


def test_pin_threads_is_for_the_shared_pool_only():
    with pytest.raises(InvalidRequestError, match=r"^pin_threads needs thread_pool 'shared': it"):
        BackendOptions(pin_threads=True)
    with pytest.raises(InvalidRequestError, match=r"^pin_threads must be True or False, got 1$"):
        BackendOptions(thread_pool="shared", pin_threads=1)  # type: ignore[arg-type]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 usable cores")
def test_pin_threads_pins_the_pool_and_the_caller_and_keeps_the_bits(tiny_bundle, tmp_path):
    """The Python runtime's pin_threads, as the C++ one's: the pool's other thread on the
    second usable CPU, the generating thread on the first during the call (seen by a thread
    polling it) and given back its CPUs after; the bits and pixels of pools per session; a
    later unpinned shared pipeline refused in one sentence."""
    code = f"""
        import os, threading, numpy as np
        from bld_runtime.backends import BackendOptions
        from bld_runtime.errors import InvalidRequestError
        from bld_runtime.pipeline import Pipeline
        cpus, me = sorted(os.sched_getaffinity(0)), threading.get_native_id()
        before = set(os.listdir("/proc/self/task"))
        options = BackendOptions(intra_op_threads=2, thread_pool="shared", pin_threads=True)
        pipe = Pipeline.load({str(tiny_bundle)!r}, options=options)
        new = [allowed(t) for t in os.listdir("/proc/self/task") if t not in before]
        seen = set()
        with polling(me, seen):
            gen = pipe.generate(seeds={SEEDS * 20}, classes={CLASSES * 20}, guidance=1.5)
            chunks = list(pipe.iter_generate(seeds={SEEDS}, classes={CLASSES}, guidance=1.5))
        np.savez({str(tmp_path / "pinned.npz")!r}, bits=gen.bits, images=gen.images)
        print(str(cpus[1]) in new, str(cpus[0]) in seen, sorted(os.sched_getaffinity(0)) == cpus,
              np.array_equal(np.concatenate([c.bits for c in chunks]), gen.bits[:6]))
        try:
            Pipeline.load({str(tiny_bundle)!r}, options=BackendOptions(
                intra_op_threads=2, thread_pool="shared"))
        except InvalidRequestError as e:
            print(e)
        """
    done = run_python(code, probe=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["True", "True", "True", "True"]
    assert lines[1:] == [
        "this process's shared onnxruntime thread pool is pinned, and onnxruntime has one per "
        "process: ask for the same pin_threads"
    ]
    want = Pipeline.load(tiny_bundle).generate(seeds=SEEDS * 20, classes=CLASSES * 20, guidance=1.5)
    got = np.load(tmp_path / "pinned.npz")
    np.testing.assert_array_equal(got["bits"], want.bits)
    np.testing.assert_array_equal(got["images"], want.images)


def test_commands_pin_with_the_shared_pool_unless_told_otherwise():
    from bld_runtime.cli import pin_threads_for

    assert pin_threads_for(None, "shared") is True  # Linux (os.sched_setaffinity)
    assert pin_threads_for(None, "session") is False
    assert pin_threads_for(False, "shared") is False
    assert pin_threads_for(True, "session") is True  # and BackendOptions refuses it


@pytest.mark.parametrize("program", ["bld", "bld-cpp"])
@pytest.mark.parametrize(
    "flags", [["--pin-threads"], ["--no-pin-threads", "--pin-threads"], ["--pin-threads"] * 2]
)
def test_pin_threads_with_pools_per_session_is_refused_in_one_line(
    program, flags, cpp_build, tiny_bundle, tmp_path
):
    """Refused whenever the last of --pin-threads / --no-pin-threads asks for pinning (click's
    rule for a pair of flags; bld-cpp follows it)."""
    done = subprocess.run(
        [*_sample_command(program, cpp_build), "sample", str(tiny_bundle), "-o",
         str(tmp_path / "out"), "--thread-pool", "session", *flags],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        "error: pin_threads needs thread_pool 'shared': it pins the shared pool's threads\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("program", ["bld", "bld-cpp"])
def test_the_later_of_pin_threads_and_no_pin_threads_wins(
    program, cpp_build, tiny_bundle, tmp_path
):
    done = subprocess.run(
        [*_sample_command(program, cpp_build), "sample", str(tiny_bundle), "-o",
         str(tmp_path / "out"), "--thread-pool", "session", "--pin-threads", "--no-pin-threads"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "samples.json").is_file()


def _sample_command(program: str, cpp_build: dict) -> list[str]:
    if program == "bld":
        return [sys.executable, "-m", "bld_runtime.cli"]
    return [str(cpp_build["release"] / "bld-cpp")]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 usable cores")
def test_one_generation_at_a_time_holds_the_pinned_core(tiny_bundle):
    """Concurrent generations do not queue up on the pinned core: while one holds it, the others
    run where the system puts them (and keep their masks); the bits are the same."""
    code = f"""
        import os, threading
        import numpy as np
        from bld_runtime.backends import BackendOptions
        from bld_runtime.pipeline import Pipeline
        options = BackendOptions(intra_op_threads=2, thread_pool="shared", pin_threads=True)
        pipe = Pipeline.load({str(tiny_bundle)!r}, options=options)
        first = str(min(os.sched_getaffinity(0)))
        barrier, pinned, bits = threading.Barrier(4), [], {{}}
        def work(k):
            me = threading.get_native_id()
            def step(i, n, b):
                pinned.append(allowed(me) == first)
            barrier.wait()
            bits[k] = pipe.generate(seeds=[k] * 8, classes=[1] * 8, callback=step).bits
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        alone = [pipe.generate(seeds=[k] * 8, classes=[1] * 8).bits for k in range(4)]
        print(any(pinned), not all(pinned),
              all(np.array_equal(bits[k], alone[k]) for k in range(4)))
        """
    done = run_python(code, probe=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]
