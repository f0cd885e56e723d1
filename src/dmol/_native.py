"""Build and load dmol's C/C++ kernels (``src/dmol/csrc/``) with the system compiler.

The sources ship as package data. Each is compiled once per (source text, compiler, flags,
CPU) into ``$DMOL_CACHE`` (default ``~/.cache/dmol``) and loaded with :mod:`ctypes`: no
PyTorch headers, so a build takes seconds and a later process only loads the library.

    >>> lib = load("wavenet_step.cpp")          # doctest: +SKIP
    >>> lib.dmol_wavenet_run.restype = ctypes.c_int  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["CompilerMissing", "BuildFailed", "cache_dir", "compiler", "load", "source"]

# -march=native: the library is valid only on this CPU model, so the CPU's flags are part of
# its cache key. -fopenmp-simd: `#pragma omp simd` without the OpenMP runtime.
NATIVE_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC", "-std=c++17",
                "-pthread")
# Builds without -march=native (baseline x86-64 / aarch64): what a CPU without AVX-512 runs.
PORTABLE_FLAGS = tuple(f for f in NATIVE_FLAGS if f != "-march=native")


class CompilerMissing(RuntimeError):
    """No C++ compiler was found (set ``CXX`` or install g++)."""


class BuildFailed(RuntimeError):
    """The compiler was found but rejected the source: a bug, never a reason to skip."""


def cache_dir() -> Path:
    root = os.environ.get("DMOL_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root or Path.home() / ".cache") / "dmol"


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def source(name: str) -> str:
    """The text of ``dmol/csrc/<name>`` (package data, so it works from an installed wheel)."""
    return resources.files("dmol").joinpath("csrc", name).read_text()


def _cpu_id() -> str:
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    return next((ln for ln in text.splitlines() if ln.startswith("flags")), sys.platform)


_LOADED: dict[tuple, ctypes.CDLL] = {}


def load(name: str, flags: tuple[str, ...] = NATIVE_FLAGS,
         defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Build (once per source, compiler, flags and CPU) and load ``dmol/csrc/<name>``.

    ``defines`` are extra ``-D`` macros. Raises :class:`CompilerMissing` when there is no
    compiler and :class:`BuildFailed` with the compiler's message when the build fails.
    """
    key_args = (name, tuple(flags), tuple(defines))
    if key_args in _LOADED:
        return _LOADED[key_args]
    cxx = compiler()
    if cxx is None:
        raise CompilerMissing(f"building {name} needs a C++ compiler (set CXX or install g++)")
    text = source(name)
    args = [*flags, *(f"-D{d}" for d in defines)]
    key = hashlib.sha256("\0".join([text, cxx, *args, _cpu_id()]).encode()).hexdigest()[:16]
    lib = cache_dir() / f"{Path(name).stem}_{key}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
            src, so = Path(tmp) / name, Path(tmp) / "kernel.so"
            src.write_text(text)
            extras = (["-lmvec"], []) if sys.platform.startswith("linux") else ([],)
            for extra in extras:  # libmvec (glibc's vector exp) is optional
                done = subprocess.run([cxx, *args, str(src), "-o", str(so), *extra],
                                      capture_output=True, text=True)
                if done.returncode == 0:
                    break
            if done.returncode:
                raise BuildFailed(f"building {name} failed:\n{done.stderr}")
            os.replace(so, lib)  # atomic: concurrent builders never see half a library
    _LOADED[key_args] = ctypes.CDLL(str(lib))
    return _LOADED[key_args]
