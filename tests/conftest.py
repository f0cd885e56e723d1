"""Test configuration.

* hypothesis runs derandomized (the same examples every run, so a red run can be reproduced and
  CI cannot turn red by chance); ``HYPOTHESIS_PROFILE=explore`` draws new examples.
* ``cpp`` / ``backend`` fixtures: the C++ synthesis kernel, built with ``-march=native`` and
  portably (``DMOL_PORTABLE_KERNEL=1``: the code path of CPUs without AVX2/AVX-512). A test
  skips only when there is no compiler (:class:`dmol._native.CompilerMissing`); a kernel that
  fails to build (:class:`dmol._native.BuildFailed`) or to load fails it.
"""

import os

import pytest
from hypothesis import settings

from dmol._native import CompilerMissing

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _use_kernel(monkeypatch: pytest.MonkeyPatch, variant: str) -> str:
    from dmol.wavenet.incremental import _load_kernel

    monkeypatch.setenv("DMOL_PORTABLE_KERNEL", "1" if variant == "portable" else "0")
    try:
        _load_kernel()
    except CompilerMissing as e:
        pytest.skip(str(e))
    return "cpp"


@pytest.fixture(params=["native", "portable"])
def cpp(request, monkeypatch) -> str:
    """``"cpp"``, with the kernel variant of this parametrization selected (built if needed)."""
    return _use_kernel(monkeypatch, request.param)


@pytest.fixture(params=["torch", "cpp", "cpp-portable"])
def backend(request, monkeypatch) -> str:
    """An engine backend: eager torch, or the C++ kernel (native and portable builds)."""
    if request.param == "torch":
        return "torch"
    return _use_kernel(monkeypatch, "portable" if request.param == "cpp-portable" else "native")
