"""r9y9/wavenet_vocoder's own ``incremental_forward``, loaded from a folder the user gives.

Nothing of it is vendored or installed: ``dmol bench synth --r9y9-src DIR`` imports the
``wavenet_vocoder`` package from DIR (a git checkout, or the sdist that
``pip download wavenet_vocoder --no-deps`` fetches, unpacked), builds its WaveNet with the
hyper-parameters of a dmol preset (random weights: speed does not depend on them) and times its
sample-by-sample loop in the benchmark's process.

DIR is only read: it is on ``sys.path`` for the import alone, and no bytecode is written into
it. Releases differ in their constructor (0.1.1 takes ``upsample_scales`` and
``weight_normalization``; later ones ``upsample_net``/``upsample_params`` and ``cin_pad``), so
the arguments are matched against the signature found, and what could not be passed is named.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dmol.wavenet.presets import WaveNetConfig

PACKAGE = "wavenet_vocoder"


def find_source(src: str | Path) -> Path:
    """The folder holding the ``wavenet_vocoder`` package: ``src`` or, if ``src`` is the
    package folder itself, its parent. ValueError (one line) if neither holds it."""
    p = Path(src).expanduser().resolve()
    candidates = [p] + ([p.parent] if p.name == PACKAGE else [])
    for root in candidates:
        if (root / PACKAGE / "wavenet.py").is_file():
            return root
    raise ValueError(f"--r9y9-src {src}: no {PACKAGE}/wavenet.py there; give a checkout of "
                     f"r9y9/wavenet_vocoder or its unpacked sdist (pip download "
                     f"wavenet_vocoder --no-deps, then tar xzf)")


def _torch_shims() -> None:
    """Names r9y9's modules use that a newer torch may lack (added only where missing)."""
    utils = torch.nn.utils
    if not hasattr(utils, "weight_norm"):  # moved to parametrizations, old name deprecated
        utils.weight_norm = utils.parametrizations.weight_norm

        def remove_weight_norm(module: torch.nn.Module, name: str = "weight"):
            if not torch.nn.utils.parametrize.is_parametrized(module, name):
                raise ValueError(f"weight_norm of '{name}' not found in {module}")
            return torch.nn.utils.parametrize.remove_parametrizations(module, name)

        utils.remove_weight_norm = remove_weight_norm


def import_wavenet(root: Path) -> types.ModuleType:
    """``wavenet_vocoder.wavenet`` imported from ``root``, leaving ``root`` as it was.

    A git checkout has no ``wavenet_vocoder/version.py`` (its setup.py writes it), which the
    package's ``__init__`` imports: a stand-in module is registered for it. Any copy of the
    package imported before (another folder, an installed one) is dropped first, so the
    module timed is the one in ``root``."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    if not (root / PACKAGE / "version.py").is_file():
        version = types.ModuleType(f"{PACKAGE}.version")
        version.__version__ = "unknown (checkout)"
        sys.modules[version.__name__] = version
    _torch_shims()
    keep_bytecode, path = sys.dont_write_bytecode, str(root)
    sys.dont_write_bytecode = True  # no __pycache__ written into the user's folder
    sys.path.insert(0, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecations of old torch APIs it uses
            module = importlib.import_module(f"{PACKAGE}.wavenet")
    finally:
        sys.path.remove(path)
        sys.dont_write_bytecode = keep_bytecode
    where = Path(module.__file__).resolve()
    if root not in where.parents:
        raise ImportError(f"{PACKAGE} was imported from {where}, not from {root}")
    return module


def _accepted(fn, wanted: dict) -> tuple[dict, list[str]]:
    """The part of ``wanted`` that ``fn``'s signature takes, and the names it does not."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(wanted), []
    return ({k: v for k, v in wanted.items() if k in params},
            [k for k in wanted if k not in params])


@dataclass
class Reference:
    """r9y9's WaveNet built like a dmol preset, ready to time."""

    model: torch.nn.Module
    src: str  # the folder it was imported from
    version: str
    cin_pad: int  # conditioning frames its upsampling net consumes on each side
    log_scale_min: float
    parameters: int
    unmatched: list[str] = field(default_factory=list)  # preset settings it has no argument for


def check_preset(cfg: WaveNetConfig) -> None:
    """ValueError unless r9y9's WaveNet can be built like ``cfg``."""
    if cfg.head != "mol" or cfg.lpc_order or cfg.gin_channels:
        raise ValueError("--r9y9-src: r9y9's WaveNet has the plain MoL head only (no LP, no "
                         "speakers): choose a preset with head 'mol', lpc_order 0, no speakers")


def build(module: types.ModuleType, cfg: WaveNetConfig) -> Reference:
    """r9y9's ``WaveNet`` with ``cfg``'s architecture (its LJSpeech MoL recipe for the
    r9y9-ljspeech-mol preset), in eval mode with weight norm folded (``make_generation_fast_``,
    as r9y9's synthesis does). The global torch seed decides its random weights."""
    check_preset(cfg)
    scales = [int(s) for s in cfg.upsample_scales]
    up_params, up_missing = {"upsample_scales": scales}, []
    upsample = sys.modules.get(f"{PACKAGE}.upsample")
    net = getattr(upsample, "ConvInUpsampleNetwork", None)
    if net is not None:  # later releases: conv_in over 2 cin_pad + 1 frames, then stretches
        up_params, up_missing = _accepted(net, {
            "upsample_scales": scales, "cin_pad": cfg.cin_pad, "cin_channels": cfg.n_mels,
            "freq_axis_kernel_size": cfg.freq_axis_kernel_size})
    wanted = {
        "out_channels": 3 * cfg.n_mixtures, "layers": cfg.layers, "stacks": cfg.stacks,
        "residual_channels": cfg.residual_channels, "gate_channels": cfg.gate_channels,
        "skip_out_channels": cfg.skip_channels, "kernel_size": cfg.kernel_size,
        "dropout": cfg.dropout, "cin_channels": cfg.n_mels, "gin_channels": -1,
        "scalar_input": True, "use_speaker_embedding": False,
        "upsample_conditional_features": True, "output_distribution": "Logistic",
        "legacy": False,  # 0.1.1: skips summed and scaled by sqrt(1/L), as dmol does
        "cin_pad": cfg.cin_pad,
    }
    if net is not None:
        wanted |= {"upsample_net": "ConvInUpsampleNetwork", "upsample_params": up_params}
    else:  # 0.1.1: transposed 2-D convolutions, one per scale
        wanted |= {"upsample_scales": scales,
                   "freq_axis_kernel_size": cfg.freq_axis_kernel_size}
    kwargs, missing = _accepted(module.WaveNet, wanted)
    # "legacy" and "output_distribution" exist in one release each; both mean the default here
    unmatched = set(missing + up_missing) - {"legacy", "output_distribution"}
    if "cin_pad" in up_params:  # its upsampling net takes it, whatever the WaveNet does
        unmatched.discard("cin_pad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm's deprecation
        model = module.WaveNet(**kwargs).eval()
        if hasattr(model, "make_generation_fast_"):
            model.make_generation_fast_()
    pad = cfg.cin_pad if "cin_pad" in up_params else 0
    version = getattr(sys.modules.get(PACKAGE), "__version__", "unknown")
    src = str(Path(module.__file__).resolve().parents[1])
    return Reference(model, src, str(version), pad, cfg.log_scale_min,
                     sum(p.numel() for p in model.parameters()), sorted(unmatched))


def time_incremental(ref: Reference, cfg: WaveNetConfig, samples: int, log_min: float,
                     log_max: float, seed: int = 0) -> tuple[int, float, float]:
    """Run r9y9's ``incremental_forward`` for at least ``samples`` samples (whole frames of a
    random log-mel in [log_min, log_max]): (samples generated, wall s, cpu s)."""
    hop = cfg.hop_length
    frames = max(1, math.ceil(samples / hop))
    rng = np.random.default_rng(seed)
    mel = rng.uniform(log_min, log_max, (1, cfg.n_mels, frames + 2 * ref.cin_pad))
    c = torch.from_numpy(mel.astype(np.float32))
    T = frames * hop
    kwargs, _ = _accepted(ref.model.incremental_forward,
                          {"c": c, "T": T, "log_scale_min": ref.log_scale_min})
    torch.manual_seed(seed)  # it samples from the global generator
    w, p = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = ref.model.incremental_forward(**kwargs)
    wall, cpu = time.perf_counter() - w, time.process_time() - p
    if out.shape[-1] != T:
        raise RuntimeError(f"r9y9's incremental_forward returned {out.shape[-1]} samples, "
                           f"expected {T}")
    return T, wall, cpu
