"""bld_runtime runs without torch: nothing in it imports torch, bld_train, bld_export or
bld_serving, and tritonclient only when a command talks to a server.

Checked three ways: statically (every import in runtime/bld_runtime is the standard library,
a declared dependency or the package itself), in a subprocess (`-X importtime` shows no torch,
and `bld sample` leaves it out of sys.modules); tests/test_wheel.py installs the wheel into a
fresh virtual environment without torch and runs the commands there.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "runtime" / "bld_runtime"
# The declared dependencies (pyproject) plus CuPy, which only the GPU backends import, lazily.
ALLOWED = {"numpy", "onnxruntime", "click", "rich", "PIL", "cupy", "bld_runtime"}
FORBIDDEN = ("torch", "bld_train", "bld_export", "bld_bench", "bld_serving", "matplotlib")
NOT_LOADED = FORBIDDEN + ("tritonclient", "openvino")  # optional: --server; --backend openvino


def _imports(tree):
    """(module, line, optional) for every absolute import; optional = inside a try whose
    handlers catch ImportError (a feature that degrades without the package)."""

    def walk(node, optional):
        if isinstance(node, ast.Try):
            catches = any(
                (
                    isinstance(h.type, ast.Name)
                    and h.type.id in ("ImportError", "ModuleNotFoundError")
                )
                or (
                    isinstance(h.type, ast.Tuple)
                    and any(
                        getattr(e, "id", "") in ("ImportError", "ModuleNotFoundError")
                        for e in h.type.elts
                    )
                )
                for h in node.handlers
            )
            for child in node.body:
                yield from walk(child, optional or catches)
            for child in node.handlers + node.orelse + node.finalbody:
                yield from walk(child, optional)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, optional
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module, node.lineno, optional
        for child in ast.iter_child_nodes(node):
            yield from walk(child, optional)

    yield from walk(tree, False)


def test_runtime_sources_import_only_allowed_modules():
    """Never torch or our other packages; other third-party modules only as optional extras."""
    bad = []
    for path in sorted(RUNTIME.rglob("*.py")):
        for name, line, optional in _imports(ast.parse(path.read_text(), str(path))):
            top = name.split(".")[0]
            where = f"{path.relative_to(REPO)}:{line} imports {name}"
            if top in FORBIDDEN:
                bad.append(where)
            elif top not in ALLOWED and top not in sys.stdlib_module_names and not optional:
                bad.append(where + " unconditionally")
    assert bad == []


def _module_names(importtime_stderr: str) -> list[str]:
    """Module names from `python -X importtime` lines: 'import time: self | cumulative | name'."""
    return [
        line.rsplit("|", 1)[1].strip()
        for line in importtime_stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    ]


def test_importing_the_runtime_does_not_import_torch(subprocess_env):
    code = (
        "import sys, bld_runtime, bld_runtime.pipeline, bld_runtime.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{NOT_LOADED!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
        check=True,
    )
    modules = _module_names(proc.stderr)
    assert "bld_runtime.pipeline" in modules and "onnxruntime" in modules  # the parse works
    assert [m for m in modules if m.split(".")[0] in NOT_LOADED] == []
    assert proc.stdout.strip() == "[]"


def test_bld_sample_runs_without_importing_torch(tiny_bundle, tmp_path, subprocess_env):
    code = textwrap.dedent(f"""
        import sys
        from bld_runtime.cli import cli
        cli.main(["sample", {str(tiny_bundle)!r}, "-n", "2", "--guidance", "1",
                  "-o", {str(tmp_path / "out")!r}], standalone_mode=False)
        print(sorted(m for m in sys.modules if m.split(".")[0] in {NOT_LOADED!r}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "00001.png").is_file()


def test_help_describes_every_command_without_importing_torch(subprocess_env):
    """Plugin commands (train, evaluate, demo, bench) are listed with their own descriptions:
    their command modules import nothing heavy, so --help stays light."""
    from importlib.metadata import entry_points

    plugins = {ep.name for ep in entry_points(group="bld.commands")}
    if not {"train", "evaluate", "demo", "bench"} <= plugins:
        pytest.skip("bld is not installed (pip install -e .), so its entry points do not exist")
    code = textwrap.dedent("""
        import sys
        from bld_runtime.cli import cli
        cli.main(["--help"], standalone_mode=False)
        print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "matplotlib",
                                                              "onnxruntime", "numpy"}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "[]"
    rows = {line.split()[0]: line for line in lines if line.startswith("  ")}
    for name in ("train", "evaluate", "demo", "bench", "sample", "encode"):
        assert name in rows and "(" not in rows[name].split(maxsplit=1)[1][:1], rows.get(name)
        assert len(rows[name].split()) > 2  # a description, not a placeholder
