"""Let NumPy's OpenBLAS use the AVX-512 kernels of a CPU it does not recognise yet.

OpenBLAS picks its kernels for one CPU type when the library loads, from
the processor's identification. A CPU newer than the OpenBLAS build (AMD's
Zen 5, family 0x1A, with OpenBLAS 0.3.31) gets the safe fallback, Haswell's
AVX2 kernels, although it executes AVX-512: float32 matrix products then run
at about half the speed the CPU has (benchmarks/README.md). The variable
``OPENBLAS_CORETYPE``, read at that load, names the type instead.

`choose_coretype` decides from the kernel's CPU flags: on an AMD CPU whose
flags include the AVX-512 subsets of OpenBLAS's SkylakeX kernels, it names
"SkylakeX" (what OpenBLAS itself picks for Zen 4); otherwise, or when the
user set the variable, nothing. The flags come from the operating system,
which lists AVX-512 only when it saves the registers, so the kernels can
run. `select_coretype` sets the variable, and can only matter before NumPy
is first imported: ``import npcnn`` calls it first, so the command line and
scripts that import npcnn before NumPy get it; others set
``OPENBLAS_CORETYPE=SkylakeX`` themselves. ``OPENBLAS_CORETYPE=Haswell``
(any value) turns this off.

This module must not import NumPy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

#: The flags OpenBLAS's SkylakeX kernels need.
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
CPUINFO = "/proc/cpuinfo"


def choose_coretype(cpuinfo: str, environ: Mapping[str, str]) -> str | None:
    """The OPENBLAS_CORETYPE to set for a CPU described by `cpuinfo` (/proc/cpuinfo's
    text), or None to leave OpenBLAS's own choice: the user set the variable, the
    CPU is not AMD, or it lacks one of `SKYLAKEX_FLAGS`."""
    if "OPENBLAS_CORETYPE" in environ:
        return None
    fields = _first_processor(cpuinfo)
    if fields.get("vendor_id") != "AuthenticAMD":
        return None
    flags = set(fields.get("flags", "").split())
    return "SkylakeX" if SKYLAKEX_FLAGS <= flags else None


def select_coretype(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set OPENBLAS_CORETYPE from `choose_coretype` when NumPy is not loaded yet.

    Returns the type set, or None (nothing to set, NumPy already loaded, or no
    readable /proc/cpuinfo, as outside Linux).
    """
    if "numpy" in sys.modules:
        return None
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as file:
            cpuinfo = file.read(1 << 16)  # the first processor's block is enough
    except OSError:
        return None
    coretype = choose_coretype(cpuinfo, environ)
    if coretype is not None:
        environ["OPENBLAS_CORETYPE"] = coretype
    return coretype


def _first_processor(cpuinfo: str) -> dict[str, str]:
    """The "key : value" lines of the first processor block of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
