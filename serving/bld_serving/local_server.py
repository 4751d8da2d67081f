"""A real tritonserver on 127.0.0.1, for tests, benchmarks and `make serve`.

The server comes from PyPI: the `nvidia-pytriton` wheel carries tritonserver 2.51 with its
Python backend (no other backend). `install()` downloads the wheel with pip into a cache
folder, unzips only the server, the Python backend, the stub for this interpreter's version
and the wheel's shared libraries, and prepares the Python environment the models run in:
a venv with numpy < 2 (Triton 2.51's Python backend hands back empty tensors with numpy 2),
this interpreter's onnxruntime version (so served and local images are computed by the same
kernels) and a copy of bld_runtime. The models find it through EXECUTION_ENV_PATH.

`LocalTriton` starts the server with free ports, waits until every model is ready and always
stops it by its PID (SIGTERM, then SIGKILL of its process group, which holds the model stub
processes). Two facts it relies on: the stub must find this interpreter's libpython first
(LD_LIBRARY_PATH starts with sysconfig's LIBDIR, else model loading fails with
"'_thread.RLock' object has no attribute '_recursion_count'"), and the server needs the
wheel's nvidia_pytriton.libs on LD_LIBRARY_PATH.

    python -m bld_serving.local_server serve runs/digits/bundle     # what `make serve` runs
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bld_runtime.files import OutputLock, replacing_directory

from .errors import ServerError

PYTRITON = "nvidia-pytriton==0.7.0"  # tritonserver 2.51 (Triton 24.10)
SERVER_DIR = "pytriton/tritonserver"
LIBS_DIR = "nvidia_pytriton.libs"
NUMPY = "numpy>=1.24,<2"


def cache_dir() -> Path:
    """BLD_TRITON_CACHE, else ~/.cache/bld/triton."""
    return Path(os.environ.get("BLD_TRITON_CACHE") or Path.home() / ".cache" / "bld" / "triton")


def _run(cmd: list[str], what: str, log) -> None:
    log(f"{what}: {' '.join(cmd)}")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ServerError(f"{what} failed (exit {result.returncode}): {' | '.join(tail)}")


@dataclass(frozen=True)
class Install:
    """An unpacked tritonserver and the Python environment its models run in."""

    root: Path  # the unzipped wheel parts
    python_env: Path  # venv for EXECUTION_ENV_PATH

    @property
    def server(self) -> Path:
        return self.root / SERVER_DIR / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / SERVER_DIR / "backends"

    def library_path(self) -> str:
        libdir = sysconfig.get_config_var("LIBDIR")
        return os.pathsep.join(
            [libdir, str(self.root / LIBS_DIR)]
            + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        )


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _check_interpreter() -> None:
    if not sys.platform.startswith("linux"):
        raise ServerError(
            "the local tritonserver runs on Linux only (the nvidia-pytriton wheel "
            "is a manylinux build)"
        )
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise ServerError(
            f"Triton's Python backend stub links libpython, and this Python "
            f"({sys.executable}) was built without a shared libpython; use a "
            f"Python built with --enable-shared"
        )


def _unpack_server(root: Path, log) -> None:
    """pip-download the wheel and unzip only what the server needs (about 140 MB)."""
    if (root / SERVER_DIR / "backends" / "python" / "triton_python_backend_stub").exists():
        return
    wheels = root.parent / "wheels"
    wheel = next(iter(sorted(wheels.glob("nvidia_pytriton-*.whl"))), None)
    if wheel is None:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(wheels),
                PYTRITON,
            ],
            "downloading tritonserver (pip)",
            log,
        )
        wheel = next(iter(sorted(wheels.glob("nvidia_pytriton-*.whl"))), None)
        if wheel is None:
            raise ServerError(f"pip download {PYTRITON} left no wheel in {wheels}")
    stub = f"{SERVER_DIR}/python_backend_stubs/{_python_version()}/triton_python_backend_stub"
    wanted = (f"{SERVER_DIR}/bin/tritonserver", f"{SERVER_DIR}/backends/python/", f"{LIBS_DIR}/")
    log(f"unpacking {wheel.name}")
    with (
        replacing_directory(root, f"tritonserver folder {root}") as staged,
        zipfile.ZipFile(wheel) as archive,
    ):
        names = archive.namelist()
        if stub not in names:
            have = sorted(
                {
                    n.split("/")[3]
                    for n in names
                    if "/python_backend_stubs/" in n and n.count("/") >= 4
                }
            )
            raise ServerError(
                f"{wheel.name} has no Python backend stub for Python "
                f"{_python_version()} (it has {', '.join(have)})"
            )
        for name in names:
            if name.startswith(wanted) and not name.endswith("/"):
                archive.extract(name, staged)
        archive.extract(stub, staged)
        python_dir = staged / SERVER_DIR / "backends" / "python"
        (staged / stub).rename(python_dir / "triton_python_backend_stub")
        for path in [
            staged / SERVER_DIR / "bin" / "tritonserver",
            python_dir / "triton_python_backend_stub",
        ]:
            path.chmod(0o755)
        shutil.rmtree(staged / SERVER_DIR / "python_backend_stubs")


def _runtime_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _prepare_env(env: Path, log) -> None:
    """A venv with numpy < 2, this onnxruntime version, and this bld_runtime copied in."""
    import onnxruntime

    import bld_runtime

    python = env / "bin" / "python"
    marker = env / ".bld-ready"
    if not marker.exists():
        if env.exists():
            shutil.rmtree(env)
        # No pip inside (ensurepip costs ~15 s): this interpreter's pip installs into it.
        _run(
            [sys.executable, "-m", "venv", "--without-pip", str(env)],
            "creating the model environment",
            log,
        )
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "-q",
                "--disable-pip-version-check",
                NUMPY,
                f"onnxruntime=={onnxruntime.__version__}",
            ],
            "installing numpy<2 and onnxruntime into the model environment",
            log,
        )
        marker.write_text("numpy<2, onnxruntime " + onnxruntime.__version__ + "\n")
    site = env / "lib" / f"python{_python_version()}" / "site-packages"
    source = Path(bld_runtime.__file__).parent
    copy = site / "bld_runtime"
    # The runtime finds its backends through entry points (backends.create), so the copy comes
    # with a distribution's metadata naming them, as `pip install bld` would give it.
    info = site / "bld_runtime_copy-0.dist-info"
    entry_points = _runtime_entry_points()
    digest = _runtime_digest(source) + " " + hashlib.sha256(entry_points.encode()).hexdigest()
    stamp = site / "bld_runtime.sha256"
    if not stamp.exists() or stamp.read_text() != digest:
        for old in (copy, info):
            if old.exists():
                shutil.rmtree(old)
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: bld-runtime-copy\nVersion: 0\n"
        )
        (info / "entry_points.txt").write_text(entry_points)
        stamp.write_text(digest)


def _runtime_entry_points() -> str:
    """The runtime's own backends as installed here (group "bld.backends"), as an
    entry_points.txt for the models' copy of the runtime."""
    from importlib import metadata

    from bld_runtime.backends import ENTRY_POINT_GROUP

    points = sorted(
        (ep.name, ep.value)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.value.startswith("bld_runtime.")
    )
    return "".join([f"[{ENTRY_POINT_GROUP}]\n"] + [f"{n} = {v}\n" for n, v in points])


def install(root: Path | None = None, log=lambda line: None) -> Install:
    """Download and unpack tritonserver and prepare the models' environment (cached)."""
    import onnxruntime

    _check_interpreter()
    root = Path(root) if root is not None else cache_dir()
    server = root / PYTRITON.replace("==", "-")
    env = root / f"env-py{_python_version()}-onnxruntime{onnxruntime.__version__}"
    with OutputLock(root, f"the tritonserver cache {root}", wait=True):  # one preparer
        _unpack_server(server, log)
        _prepare_env(env, log)
    return Install(server, env)


# --- the server process --------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalTriton:
    """tritonserver over `repository`, on 127.0.0.1 with free ports; a context manager."""

    def __init__(
        self, repository, install: Install, log_path=None, extra_args: tuple[str, ...] = ()
    ):
        self.repository = Path(repository)
        self.install = install
        self.log_path = Path(log_path) if log_path else self.repository.with_suffix(".log")
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        from .repository import server_args

        return [
            str(self.install.server),
            "--model-repository",
            str(self.repository),
            "--backend-directory",
            str(self.install.backends),
            "--http-address",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--allow-cpu-metrics",
            "true",
            "--strict-readiness",
            "true",
            "--disable-auto-complete-config",
            "--exit-timeout-secs",
            "5",
            *server_args(self.repository),  # e.g. version-compatible TensorRT plans
            *self.extra_args,
        ]

    def start(self, timeout_s: float = 120.0) -> LocalTriton:
        for attempt in range(3):  # a free port may be taken between probing and binding
            self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
            env = {**os.environ, "LD_LIBRARY_PATH": self.install.library_path()}
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                self._wait_ready(timeout_s)
                return self
            except ServerError:
                self.stop()
                if attempt == 2 or "Address already in use" not in self.log_tail():
                    raise
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def load_errors(self) -> list[str]:
        """The log's model-load failures, one line each (Triton's traceback cut off)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [
            line.split("] ", 1)[-1].split("\\n")[0].strip('"')
            for line in lines
            if line.startswith("E") and "failed to load" in line
        ]

    def _failure(self, what: str) -> ServerError:
        errors = self.load_errors()
        detail = "\n".join(errors) if errors else self.log_tail()
        return ServerError(f"{what}; its log ({self.log_path}) says:\n{detail}")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._failure(
                    f"tritonserver exited with code {self.process.returncode} while starting"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise self._failure(f"tritonserver was not ready after {timeout_s:g} s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the server by PID, wait, then SIGKILL its process group (the stubs)."""
        if self.process is None:
            return
        pid = self.process.pid
        if self.process.poll() is None:
            os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the group we created: the server and its stubs
        self.process.wait()

    def rss_bytes(self) -> tuple[int, int]:
        """(server RSS, server + model stub processes RSS), from /proc."""
        pid = self.pid
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        tree, todo = [], [pid]
        while todo:
            p = todo.pop()
            tree.append(p)
            todo.extend(children.get(p, []))
        sizes = [_rss(p) for p in tree]
        return sizes[0], sum(sizes)

    def __enter__(self):
        return self.start() if not self.alive() else self

    def __exit__(self, *exc):
        self.stop()


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- `make serve` --------------------------------------------------------------------------


def main(argv=None) -> None:
    import click

    from bld_runtime.cli import OneLineErrorGroup

    from .configs import Serving
    from .repository import write_repository

    @click.group(cls=OneLineErrorGroup)
    def cli():
        """A local tritonserver (from the nvidia-pytriton wheel) serving a bld bundle."""

    @cli.command()
    @click.argument("bundle", type=click.Path(path_type=Path))
    @click.option("--max-batch", default=16, show_default=True, type=int)
    @click.option("--queue-delay-us", default=2000, show_default=True, type=int)
    @click.option("--instances", default=1, show_default=True, type=int)
    @click.option("--threads", default=0, show_default=True, type=int)
    def serve(bundle, max_batch, queue_delay_us, instances, threads):
        """Write a repository for BUNDLE, start tritonserver on 127.0.0.1, wait for Ctrl-C."""
        if not (bundle / "bld.json").is_file():
            raise ServerError(
                f"{bundle} is not a bundle (no bld.json); `make demo` writes runs/digits/bundle"
            )
        import tempfile

        inst = install(log=lambda line: click.echo(line, err=True))
        (cache_dir() / "repositories").mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="serve-", dir=cache_dir() / "repositories"))
        try:
            _serve(
                bundle,
                work,
                inst,
                Serving(
                    max_batch=max_batch,
                    queue_delay_us=queue_delay_us,
                    instances=instances,
                    threads=threads,
                    python_env=str(inst.python_env),
                ),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _serve(bundle, work, inst, serving):
        repo = work / "repository"
        write_repository(bundle, repo, serving)
        server = LocalTriton(repo, inst, log_path=work / "tritonserver.log")
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        with server:
            click.echo(
                f"tritonserver (pid {server.pid}) serves {bundle}:\n"
                f"  HTTP    {server.http_url}   bld sample --server {server.http_url} "
                f"--seed 0 -n 16 --class all -o out/\n"
                f"  gRPC    {server.grpc_url}\n"
                f"  metrics {server.metrics_url}\n"
                f"  log     {server.log_path} (removed when it stops)\n"
                f"Ctrl-C stops it."
            )
            try:
                while not stop and server.alive():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            if not server.alive():
                raise ServerError(f"tritonserver exited; its log ends:\n{server.log_tail()}")
        click.echo("stopped")

    cli.main(argv, prog_name="python -m bld_serving.local_server")


if __name__ == "__main__":
    main()
