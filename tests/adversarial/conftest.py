"""The adversarial suite: bld attacked as a hostile or careless user would.

Every case runs the real command line in a fresh process (`python -m bld_runtime.cli ...`, as a
user's shell would run `bld`) and holds it to the same contract:

- exit code 1, and exactly one line on stderr, starting with `error:`;
- no traceback anywhere;
- no partial or mixed output: a new output path is not created (nor temporaries beside it);
- the previous output intact: whatever was at the output path before is byte-for-byte the same.

`check_refused` does all of that. The cases are grouped by class of failure: bundles
(tampering, manifest vs graph), inputs (CLI and API), faults (kills, a full disk, permissions,
concurrent writers) and threads/soak.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = {"bld": "bld_runtime.cli", "bld-export": "bld_export.cli", "bld-train": "bld_train.cli"}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def child_env(extra: dict | None = None) -> dict[str, str]:
    paths = [str(REPO / name) for name in ("runtime", "train", "export", "bench", "workflows")]
    paths.append(str(REPO))
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    env.pop("BLD_TRACEBACK", None)
    return {**env, **(extra or {})}


def command(program: str, *args, permissions: bool = False) -> list[str]:
    """The command line of `program` (bld, bld-export, bld-train) with `args`.

    permissions: make file permissions apply even when the tests run as root (root ignores
    them), by dropping the capabilities that override them (util-linux's setpriv).
    """
    line = [sys.executable, "-m", MODULES[program], *map(str, args)]
    if permissions and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail(
                "running as root: these cases need util-linux's setpriv to make file "
                "permissions apply"
            )
        line = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *line]
    return line


def run(
    program: str,
    *args,
    env: dict | None = None,
    timeout: float = 300,
    preexec_fn=None,
    cwd=None,
    permissions: bool = False,
) -> Result:
    """Run `program` (bld, bld-export, bld-train) as a new process, as a user would."""
    proc = subprocess.run(
        command(program, *args, permissions=permissions),
        capture_output=True,
        text=True,
        env=child_env(env),
        timeout=timeout,
        preexec_fn=preexec_fn,
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def snapshot(*paths: Path) -> dict[str, str | None]:
    """Every file below `paths` (hidden ones too) with its sha256; None for a missing path."""
    out: dict[str, str | None] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            out[str(path)] = None
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                out[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return out


def leftovers(path: Path) -> list[str]:
    """Temporaries or partial outputs beside `path` (its released lock file does not count)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(
        p.name
        for p in path.parent.iterdir()
        if p.name.startswith(f".{path.name}.") and p.name != f".{path.name}.lock"
    )


def check_refused(result: Result, fragment: str, new_outputs=(), kept: dict | None = None):
    """The contract of every adversarial case (see the module docstring)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "Traceback" not in result.stdout + result.stderr
    for path in new_outputs:
        assert not Path(path).exists(), f"{path} was created"
        assert leftovers(Path(path)) == [], f"partial output beside {path}: {leftovers(path)}"
    if kept is not None:
        now = snapshot(*map(Path, kept))
        assert now == kept, "the previous output changed"
    return lines[0]


def copy_bundle(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / "bld.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rehash(bundle: Path, *names: str) -> None:
    """Update the manifest's sha256 of `names` to the files as they are now (a consistent edit)."""

    def change(data):
        for name in names:
            file = bundle / data["graphs"][name]["file"]
            data["graphs"][name]["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()

    edit_manifest(bundle, change)


@pytest.fixture(scope="session")
def previous_samples(tiny_bundle, tmp_path_factory) -> Path:
    """A folder holding an earlier successful `bld sample` output (read-only for the cases)."""
    out = tmp_path_factory.mktemp("previous") / "samples"
    result = run("bld", "sample", tiny_bundle, "-n", 3, "--seed", 5, "-o", out)
    assert result.returncode == 0, result.stderr
    return out
