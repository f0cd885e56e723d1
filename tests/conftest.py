"""Test configuration.

* hypothesis runs derandomized (the same examples every run, so a red run can be reproduced and
  CI cannot turn red by chance); ``HYPOTHESIS_PROFILE=explore`` draws new examples. torch's
  global generator is registered with hypothesis like ``random`` and numpy's: each example
  starts from a fixed seed, so a failing example replays with the same ``torch.rand`` draws.
* every test starts with the global generators (torch, numpy's legacy one, random) seeded: a
  test's numbers never depend on which tests ran before it.
* ``cpp`` / ``backend`` fixtures: the C++ synthesis kernel, built with ``-march=native`` and
  portably (``DMOL_PORTABLE_KERNEL=1``: the code path of CPUs without AVX2/AVX-512). A test
  skips only when there is no compiler (:class:`dmol._native.CompilerMissing`); a kernel that
  fails to build (:class:`dmol._native.BuildFailed`) or to load fails it.
"""

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import register_random, settings

from dmol._native import CompilerMissing

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class _TorchGlobalRandom:
    """torch's global generator with the interface hypothesis manages (seed / getstate /
    setstate): hypothesis seeds it before each example and restores it after."""

    def seed(self, seed: int) -> None:
        torch.manual_seed(int(seed) % 2**63)

    def getstate(self) -> torch.Tensor:
        return torch.random.get_rng_state()

    def setstate(self, state: torch.Tensor) -> None:
        torch.random.set_rng_state(state)


_TORCH_RANDOM = _TorchGlobalRandom()  # hypothesis keeps only a weak reference
register_random(_TORCH_RANDOM)


@pytest.fixture(autouse=True)
def _seeded_global_generators() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002  (the legacy global: what library code may draw from)
    random.seed(0)


@pytest.fixture(scope="module")
def single_thread():
    """torch on one thread for a whole module (``pytestmark = pytest.mark.usefixtures(...)``):
    the tiny models' convolutions only spin-wait on a second thread of a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
