"""bld_runtime.cpuinfo: the one reader of /proc/cpuinfo (precision checks, bld bench)."""

from bld_runtime.cpuinfo import cpu_flags, cpu_model


def test_the_first_cpus_flags_and_model(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_vnni\n"
        "vmx flags\t: ept\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0c\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_model(str(x86)) == "AMD EPYC"
    assert cpu_flags(str(arm)) == {"fp", "asimd", "asimddp"} and cpu_model(str(arm)) is None
    assert cpu_flags(str(tmp_path / "none")) is None and cpu_model(str(tmp_path / "none")) is None
