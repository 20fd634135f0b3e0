"""The one reader of /proc/cpuinfo: the CPU every recorded figure names."""

from pathlib import Path

import pytest

from vinci_edge.host import ISA_FLAGS, cpu_name, isa_flags, parse_cpuinfo

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx_vnni
processor\t: 1
model name\t: another CPU
flags\t\t: fpu
"""
ARM = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd asimddp i8mm sve
CPU part\t: 0xd42
Hardware\t: NVIDIA Jetson AGX Orin
"""


def test_x86_model_and_flags_of_the_first_cpu():
    model, flags = parse_cpuinfo(X86)
    assert model == "AMD EPYC 9R14"
    assert {"avx2", "avx512_vnni", "avx_vnni"} <= flags and "amx_int8" not in flags


def test_arm_spells_them_hardware_and_features():
    model, flags = parse_cpuinfo(ARM)
    assert model == "NVIDIA Jetson AGX Orin"
    assert {"asimddp", "i8mm", "sve"} <= flags


def test_no_cpuinfo_text_gives_nothing():
    assert parse_cpuinfo("") == ("", frozenset())


CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(
    not CPUINFO.is_file() or "model name" not in CPUINFO.read_text(), reason="no x86 /proc/cpuinfo here"
)
def test_this_machine():
    text = CPUINFO.read_text()
    first_model = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
    assert cpu_name() == first_model
    flags = set(next(ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")))
    assert isa_flags() == [f for f in ISA_FLAGS if f in flags]
