"""npcnn.runtime.openblas: NumPy's OpenBLAS gets AVX-512 kernels on AMD CPUs it does not know."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from npcnn.runtime.openblas import SKYLAKEX_FLAGS, choose_coretype, select_coretype

AVX512 = " ".join(sorted(SKYLAKEX_FLAGS))


def cpuinfo(vendor: str, flags: str, processors: int = 2) -> str:
    block = f"processor\t: {{}}\nvendor_id\t: {vendor}\ncpu family\t: 26\n"
    block += f"flags\t\t: fpu sse2 avx2 {flags}\n"
    return "\n".join(block.format(i) for i in range(processors))


def test_an_amd_cpu_with_avx512_gets_the_skylakex_kernels() -> None:
    assert choose_coretype(cpuinfo("AuthenticAMD", AVX512), {}) == "SkylakeX"


@pytest.mark.parametrize("missing", sorted(SKYLAKEX_FLAGS))
def test_one_missing_avx512_subset_keeps_openblas_own_choice(missing: str) -> None:
    flags = " ".join(sorted(SKYLAKEX_FLAGS - {missing}))
    assert choose_coretype(cpuinfo("AuthenticAMD", flags), {}) is None


def test_other_vendors_and_a_user_setting_are_left_alone() -> None:
    assert choose_coretype(cpuinfo("GenuineIntel", AVX512), {}) is None
    assert choose_coretype(cpuinfo("AuthenticAMD", AVX512), {"OPENBLAS_CORETYPE": "Zen"}) is None
    assert choose_coretype("", {}) is None


def test_only_the_first_processor_block_is_read() -> None:
    text = cpuinfo("GenuineIntel", "") + "\n\n" + cpuinfo("AuthenticAMD", AVX512)
    assert choose_coretype(text, {}) is None


def test_nothing_is_set_once_numpy_is_loaded() -> None:
    environ: dict[str, str] = {}
    assert "numpy" in sys.modules
    assert select_coretype(environ) is None and environ == {}


def child_blas(environ: dict[str, str]) -> dict:
    """OPENBLAS_CORETYPE and threadpoolctl's view of the BLAS in a fresh `import npcnn`."""
    code = (
        "import json, os, npcnn\n"
        "from threadpoolctl import threadpool_info\n"
        "blas = [i for i in threadpool_info() if i['internal_api'] == 'openblas']\n"
        "print(json.dumps({'env': os.environ.get('OPENBLAS_CORETYPE'),"
        " 'arch': blas[0]['architecture'] if blas else None}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo")
def test_import_npcnn_sets_the_type_before_numpy_loads_openblas() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    expected = choose_coretype(Path("/proc/cpuinfo").read_text(errors="replace"), {})
    seen = child_blas(environ)
    assert seen["env"] == expected
    if expected is not None and seen["arch"] is not None:
        assert seen["arch"] == expected


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo")
def test_a_users_choice_wins() -> None:
    seen = child_blas({**os.environ, "OPENBLAS_CORETYPE": "Haswell"})
    assert seen["env"] == "Haswell"
    assert seen["arch"] in (None, "Haswell")
