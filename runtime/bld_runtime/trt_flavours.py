"""Which TensorRT is importable here, and what it can do: one place for the three flavours.

    tensorrt       TensorRT 10.x or 11.x (full: builder + ONNX parser + runtime)
    tensorrt_lean  its lean runtime (deserialises version-compatible plans only; no builder)
    tensorrt_rtx   TensorRT for RTX (builder + parser; builds ahead of time, even without a GPU)

A plan made by `tensorrt` is loaded by `tensorrt` or, when it was built version-compatible,
by `tensorrt_lean`: both are the flavour "tensorrt" in the engine cache. Features are detected
by NAME (hasattr), never by version number or enum value: enum values changed between 10 and 11
(STRONGLY_TYPED 1 -> 0, VERSION_COMPATIBLE 13 -> 12) and 11 removed the precision flags.

Importing a flavour is safe without a GPU; constructing its Runtime is not (it logs CUDA error
35 and the next call segfaults), so the backend checks for a device first (backends/cudart.py).
"""

from __future__ import annotations

import importlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import BackendUnavailableError, InvalidRequestError

FLAVOURS = ("tensorrt", "tensorrt_rtx")
#: Importable modules per flavour, preferred first. The lean runtime only loads plans.
MODULES = {"tensorrt": ("tensorrt", "tensorrt_lean"), "tensorrt_rtx": ("tensorrt_rtx",)}
#: The first four bytes of a serialised plan (checked before any deserialisation).
PLAN_MAGIC = {"tensorrt": b"ftrt", "tensorrt_rtx": b"vtrt"}
INSTALL_HINT = {
    "tensorrt": "pip install 'bld[tensorrt-cu12]' (or tensorrt-cu13; on Jetson the JetPack's "
    "python3-libnvinfer)",
    "tensorrt_rtx": "pip install 'bld[tensorrt-rtx]'",
}

#: Written by every Jetson Linux (L4T) release, JetPack 5 to 7; no server or PC has it.
JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")
#: The fallback (containers without /etc/nv_tegra_release, other Tegra distributions): the
#: kernel's device tree lists "nvidia,tegra..." (e.g. nvidia,tegra234) among the board's
#: NUL-separated compatible strings. Only Arm boards booted from a device tree have the file.
DEVICE_TREE_COMPATIBLE = Path("/proc/device-tree/compatible")
#: How much of the compatible list is read (a handful of short strings; never a whole file).
DEVICE_TREE_READ_LIMIT = 4096
#: --hardware-compat values -> HardwareCompatibilityLevel member names.
HARDWARE_COMPAT_LEVELS = {"ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


def on_jetson() -> bool:
    """True on a Jetson, where TensorRT supports no hardware compatibility at all: L4T's
    release file, or else "nvidia,tegra" in the device tree's compatible list (read without
    blocking, at most DEVICE_TREE_READ_LIMIT bytes; any error reads as "not a Jetson")."""
    if JETSON_RELEASE_FILE.exists():
        return True
    try:
        fd = os.open(DEVICE_TREE_COMPATIBLE, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        data = os.read(fd, DEVICE_TREE_READ_LIMIT)
    except OSError:
        return False
    finally:
        os.close(fd)
    return any(entry.startswith(b"nvidia,tegra") for entry in data.split(b"\0"))


@dataclass(frozen=True)
class Flavour:
    """An imported TensorRT module of one flavour."""

    name: str  # "tensorrt" or "tensorrt_rtx"
    module: ModuleType
    module_name: str  # the module actually imported (tensorrt, tensorrt_lean, tensorrt_rtx)

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split(".")[:4] if p.isdigit())

    @property
    def major(self) -> int:
        return self.version_tuple[0]

    @property
    def can_build(self) -> bool:
        return hasattr(self.module, "Builder") and hasattr(self.module, "OnnxParser")

    def builder_flag(self, name: str) -> Any:
        """BuilderFlag.<name>, or None where this version has no such flag."""
        return getattr(self.module.BuilderFlag, name, None)

    def network_flag(self, name: str) -> Any:
        flags = getattr(self.module, "NetworkDefinitionCreationFlag", None)
        return getattr(flags, name, None) if flags is not None else None

    def describe(self) -> str:
        return f"{self.module_name} {self.version}"

    def hardware_compat_level(self, value: str) -> Any:
        """HardwareCompatibilityLevel for --hardware-compat `value` ("ampere+", "same-cc"), or a
        one-line refusal where it cannot be built: on a Jetson, or a TensorRT without the
        level (JetPack 6's 10.3 has no SAME_COMPUTE_CAPABILITY)."""
        if on_jetson():
            raise InvalidRequestError(
                f"--hardware-compat {value}: TensorRT does not support hardware compatibility "
                f"on Jetson; build on the device without it"
            )
        levels = getattr(self.module, "HardwareCompatibilityLevel", None)
        level = getattr(levels, HARDWARE_COMPAT_LEVELS[value], None)
        if level is None:
            raise InvalidRequestError(
                f"{self.describe()} has no hardware-compatibility level "
                f"{HARDWARE_COMPAT_LEVELS[value]} (--hardware-compat {value})"
            )
        return level


def import_flavour(name: str | None = None, need_builder: bool = False) -> Flavour:
    """The flavour `name` (None: the first importable of FLAVOURS), or a one-line error."""
    if name is not None and name not in FLAVOURS:
        raise BackendUnavailableError(
            f"unknown TensorRT flavour {name!r}; choose one of {', '.join(FLAVOURS)}"
        )
    names = (name,) if name else FLAVOURS
    problems = []
    for flavour in names:
        for module_name in MODULES[flavour]:
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                problems.append(f"{module_name} ({_short(e)})")
                continue
            found = Flavour(flavour, module, module_name)
            if need_builder and not found.can_build:
                problems.append(f"{module_name} {found.version} (a runtime without a builder)")
                continue
            return found
    what = "a TensorRT builder" if need_builder else "TensorRT"
    hints = "; ".join(INSTALL_HINT[f] for f in names)
    raise BackendUnavailableError(
        f"{what} is not importable here: {', '.join(problems)}; install it with {hints}"
    )


def available_versions() -> dict[str, str | None]:
    """module name -> version for every TensorRT module that imports here (for `doctor`)."""
    out: dict[str, str | None] = {}
    for modules in MODULES.values():
        for module_name in modules:
            try:
                out[module_name] = str(importlib.import_module(module_name).__version__)
            except ImportError as e:
                out[module_name] = None if "No module named" in str(e) else f"broken: {_short(e)}"
    return out


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
