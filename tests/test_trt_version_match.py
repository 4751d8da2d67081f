"""One version rule for both runtimes: a TensorRT version matches another when the shorter,
split at dots, is a prefix of the longer (bld-export writes tensorrt.__version__, "10.3.0" on
the JetPack 6 wheel; a plan's header and the C++ runtime say "10.3.0.26"). The C++ side's
cases are in runtime/cpp/tests/test_core.cpp ("TensorRT versions match ...")."""

from dataclasses import replace

import pytest

from bld_runtime.engine_cache import (
    BatchProfile,
    EngineKey,
    RuntimeTarget,
    incompatibility,
    versions_match,
)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ("10.3.0", "10.3.0.26", True),
        ("10.3.0.26", "10.3.0", True),
        ("10.3.0.26", "10.3.0.26", True),
        ("10.3", "10.3.0.26", True),
        ("10.3.0.26", "10.3.0.30", False),
        ("10.3.0", "10.3.1.26", False),
        ("10.3.0", "10.30.0", False),  # parts, not characters
        ("10.16.0", "10.1.6", False),
        ("11.0.0", "10.0.0.0", False),
    ],
)
def test_versions_match(a: str, b: str, match: bool) -> None:
    assert versions_match(a, b) is match
    assert versions_match(b, a) is match  # symmetric


def _key(version: str, flags: tuple[str, ...] = ("FP16",)) -> EngineKey:
    return EngineKey(
        graph="step",
        graph_sha256="a" * 64,
        flavour="tensorrt",
        version=version,
        compute_capabilities=("8.7",),
        hardware_compat="none",
        precision="fp16",
        profiles=(BatchProfile(1, 4, 8),),
        flags=flags,
        dla_core=None,
        optimization_level=None,
        workspace_mib=None,
    )


def test_three_and_four_part_versions_are_the_same_release() -> None:
    orin = RuntimeTarget("tensorrt", "10.3.0", "8.7")  # tensorrt.__version__ on JetPack 6
    assert incompatibility(_key("10.3.0.26"), orin) is None  # imported: the plan's header
    assert incompatibility(_key("10.3.0"), replace(orin, version="10.3.0.26")) is None
    why = incompatibility(_key("10.3.0"), replace(orin, version="10.3.1"))
    assert why is not None and "not built version-compatible" in why


def test_version_compatible_plans_keep_the_newer_same_major_rule() -> None:
    vc = _key("10.3.0", ("FP16", "VERSION_COMPATIBLE"))
    assert incompatibility(vc, RuntimeTarget("tensorrt", "10.3.0.26", "8.7")) is None
    assert incompatibility(vc, RuntimeTarget("tensorrt", "10.7.0.23", "8.7")) is None
    assert incompatibility(vc, RuntimeTarget("tensorrt", "10.2.0", "8.7")) is not None
    assert incompatibility(vc, RuntimeTarget("tensorrt", "11.0.0", "8.7")) is not None
