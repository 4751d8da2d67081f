"""What Linux says of the CPU (/proc/cpuinfo): its feature flags, which decide whether a precision
runs natively (int8: VNNI/AMX-INT8, bf16: AVX512_BF16/AMX), and its model name, which `bld bench`
records beside its figures. One reader for the runtime's precision checks and the benchmark.
"""

from __future__ import annotations

CPUINFO = "/proc/cpuinfo"


def _fields(path: str) -> dict[str, str] | None:
    """The first CPU's "key: value" lines (the first of each key), or None where the file cannot
    be read (macOS, Windows)."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        return None
    return fields


def cpu_flags(path: str = CPUINFO) -> set[str] | None:
    """The first CPU's feature flags (x86 "flags", ARM64 "Features"), or None where they cannot
    be read."""
    fields = _fields(path)
    if fields is None:
        return None
    for key in ("flags", "Features"):
        if key in fields:
            return set(fields[key].split())
    return None


def cpu_model(path: str = CPUINFO) -> str | None:
    """The first CPU's model name (x86 "model name"), or None where Linux does not say."""
    fields = _fields(path)
    return None if fields is None else fields.get("model name") or None


__all__ = ["cpu_flags", "cpu_model"]
