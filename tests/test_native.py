"""dmol._native: a missing compiler and a failing build are told apart (only the first may turn
into a skip or a fallback), and every code path of the synthesis kernel compiles."""

from __future__ import annotations

import subprocess

import pytest
import torch

from dmol import _native
from dmol.wavenet import incremental, synthesis
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset


def _fresh(monkeypatch, tmp_path) -> None:
    """An empty kernel cache and no library loaded in this process."""
    monkeypatch.setenv("DMOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "_LOADED", {})


def test_no_compiler_is_compiler_missing(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no c++ / g++ on it
    with pytest.raises(_native.CompilerMissing, match="compiler"):
        _native.load("wavenet_step.cpp")


def test_a_source_the_compiler_rejects_is_build_failed(monkeypatch, tmp_path):
    """A broken kernel is an error with the compiler's message, never a skip; the user-facing
    'auto' backend still falls back to torch, with a warning that says why."""
    if _native.compiler() is None:
        pytest.skip("no C++ compiler")
    _fresh(monkeypatch, tmp_path)
    # a fatal error stops the compiler at once (each load below tries to build it again)
    broken = '#include "deliberately_broken.h"\n' + _native.source("wavenet_step.cpp")
    monkeypatch.setattr(_native, "source", lambda name: broken)
    with pytest.raises(_native.BuildFailed, match="deliberately_broken"):
        _native.load("wavenet_step.cpp")
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-built is cached
    assert not incremental.cpp_available()
    torch.manual_seed(0)
    model = WaveNet(get_preset("tiny")[0]).eval()
    why = r"building the C\+\+ kernel failed.*deliberately_broken.*'torch' backend"
    with pytest.warns(RuntimeWarning, match=why):
        assert synthesis.make_engine(model).backend == "torch"
    with pytest.raises(_native.BuildFailed):
        incremental.IncrementalWaveNet(model, backend="cpp")  # asked for by name: no fallback


# -march for each #if branch of the kernel: AVX-512 with bfloat16 dot products, AVX-512
# without them, AVX2 + FMA, and none (the portable loops), with the macros that select it. This
# machine runs only some of them, but each must compile: a typo in a branch nobody here runs
# would otherwise ship unseen.
AVX2 = {"__AVX2__", "__FMA__"}  # implied by AVX-512, whose #if comes first
ISAS = {"avx512-bf16": ("-march=sapphirerapids", {"__AVX512F__", "__AVX512BF16__", *AVX2}),
        "avx512": ("-march=skylake-avx512", {"__AVX512F__", *AVX2}),
        "avx2": ("-march=haswell", AVX2),
        "portable": (None, set())}
BRANCH_MACROS = {"__AVX512F__", "__AVX512BF16__", *AVX2}


@pytest.mark.parametrize("isa", list(ISAS))
def test_every_code_path_of_the_kernel_compiles(isa, tmp_path):
    cxx = _native.compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    march, macros = ISAS[isa]
    flags = [*_native.PORTABLE_FLAGS, *([march] if march else [])]
    defined = subprocess.run([cxx, *flags, "-dM", "-E", "-x", "c++", "/dev/null"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert BRANCH_MACROS & set(defined) == macros  # the flags select the intended branch
    src = tmp_path / "wavenet_step.cpp"
    src.write_text(_native.source("wavenet_step.cpp"))
    # -O1 (last -O wins): still inlines the intrinsics, so a target mismatch is still an error
    done = subprocess.run([cxx, *flags, "-O1", str(src), "-o", str(tmp_path / "k.so")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
