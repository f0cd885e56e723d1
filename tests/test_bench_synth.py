"""`dmol bench synth`'s streaming rows and ``--r9y9-src``, on the tiny preset.

The r9y9 side runs against small stand-ins written here with the import path and the
constructor / ``incremental_forward`` signatures of r9y9/wavenet_vocoder's two API
generations (no network, no real r9y9): the bench must build them like the preset, feed the
conditioning its upsampling net expects, and leave the source folder untouched."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest

from dmol.benchmarks import bench_synth
from dmol.wavenet.presets import get_preset

# the steps loop of both stand-ins: some real work per sample, like the real one
_LOOP = """
                out = torch.zeros(1, 1, T)
                x = torch.zeros(1, 1)
                for t in range(T):
                    x = torch.tanh(self.first(x))[:, :1]
                    out[0, 0, t] = x[0, 0]
                CALLS.append({"T": T, "frames": c.shape[-1], "log_scale_min": log_scale_min})
                return out
"""

# later releases: an upsampling network with cin_pad; a checkout has no version.py
LATER = {
    "__init__.py": "from .version import __version__\nfrom .wavenet import WaveNet\n",
    "upsample.py": """
        class ConvInUpsampleNetwork:
            def __init__(self, upsample_scales, upsample_activation="none",
                         upsample_activation_params={}, mode="nearest",
                         freq_axis_kernel_size=1, cin_pad=0, cin_channels=80):
                self.scales, self.cin_pad = list(upsample_scales), cin_pad
                self.kwargs = dict(upsample_scales=upsample_scales, cin_pad=cin_pad,
                                   cin_channels=cin_channels,
                                   freq_axis_kernel_size=freq_axis_kernel_size)
    """,
    "wavenet.py": """
        import math
        import torch
        from torch import nn
        from wavenet_vocoder import upsample

        BUILT, CALLS = [], []

        class WaveNet(nn.Module):
            def __init__(self, out_channels=256, layers=20, stacks=2, residual_channels=512,
                         gate_channels=512, skip_out_channels=512, kernel_size=3,
                         dropout=0.05, cin_channels=-1, gin_channels=-1, n_speakers=None,
                         upsample_conditional_features=False,
                         upsample_net="ConvInUpsampleNetwork", upsample_params=None,
                         scalar_input=False, use_speaker_embedding=False,
                         output_distribution="Logistic", cin_pad=0):
                super().__init__()
                kw = dict(locals())
                kw.pop("self"), kw.pop("__class__")
                self.up = getattr(upsample, upsample_net)(**upsample_params)
                kw["upsample"] = self.up.kwargs
                BUILT.append(kw)
                self.first = nn.Linear(1, residual_channels)
                self.fast = False

            def make_generation_fast_(self):
                self.fast = True

            def incremental_forward(self, initial_input=None, c=None, g=None, T=100,
                                    test_inputs=None, tqdm=lambda x: x, softmax=True,
                                    quantize=True, log_scale_min=-50.0):
                hop = math.prod(self.up.scales)
                assert (c.shape[-1] - 2 * self.up.cin_pad) * hop == T  # as r9y9 asserts
    """ + _LOOP,
}

# 0.1.1 (the sdist on PyPI): transposed convolutions from upsample_scales, no cin_pad
FIRST = {
    "__init__.py": "from .version import __version__\nfrom .wavenet import WaveNet\n",
    "version.py": "__version__ = '0.1.1'\n",
    "wavenet.py": """
        import math
        import torch
        from torch import nn

        BUILT, CALLS = [], []

        class WaveNet(nn.Module):
            def __init__(self, out_channels=256, layers=20, stacks=2, residual_channels=512,
                         gate_channels=512, skip_out_channels=512, kernel_size=3,
                         dropout=0.05, cin_channels=-1, gin_channels=-1, n_speakers=None,
                         weight_normalization=True, upsample_conditional_features=False,
                         upsample_scales=None, freq_axis_kernel_size=3, scalar_input=False,
                         use_speaker_embedding=True, legacy=True):
                super().__init__()
                kw = dict(locals())
                kw.pop("self"), kw.pop("__class__")
                BUILT.append(kw)
                self.scales = upsample_scales
                self.first = nn.Linear(1, residual_channels)
                self.fast = False

            def make_generation_fast_(self):
                self.fast = True

            def incremental_forward(self, initial_input=None, c=None, g=None, T=100,
                                    test_inputs=None, tqdm=lambda x: x, softmax=True,
                                    quantize=True, log_scale_min=-7.0):
                assert c.shape[-1] * math.prod(self.scales) == T
    """ + _LOOP,
}


@pytest.fixture(autouse=True)
def _forget_stand_ins():
    """The stand-ins are imported as ``wavenet_vocoder``: drop them after each test."""
    yield
    for name in [m for m in sys.modules if m.split(".")[0] == "wavenet_vocoder"]:
        del sys.modules[name]


def _write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "wavenet_vocoder"
    pkg.mkdir(parents=True)
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b""
            for p in sorted(root.rglob("*"))}


def _bench(capsys, *args: str) -> dict:
    rc = bench_synth.main(["--preset", "tiny", "--seconds", "0.1", "--backend", "torch",
                           "--json", *args])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return json.loads(cap.out)


def test_streaming_rows_give_rate_and_latency(capsys):
    res = _bench(capsys, "--mode", "streaming", "--baseline-seconds", "0.02")
    cfg, _ = get_preset("tiny")
    frames = round(0.1 * cfg.sample_rate / cfg.hop_length)
    (row,) = [r for r in res["rows"] if r["system"].startswith("streaming")]
    assert row["samples"] == frames * cfg.hop_length  # every frame's audio, flush included
    assert row["samples_per_s"] > 0 and row["rtf"] > 0
    assert row["lookahead_frames"] == 3  # tiny: cin_pad 1 + 2 from the stretches
    assert row["lookahead_ms"] == pytest.approx(3 * cfg.hop_length / cfg.sample_rate * 1e3)
    assert row["frames_timed"] == frames - 3  # the pushes that completed a frame
    assert 0 < row["compute_ms_median"] <= row["compute_ms_p95"]
    assert row["latency_ms_median"] == pytest.approx(row["lookahead_ms"]
                                                     + row["compute_ms_median"])
    assert row["latency_ms_p95"] == pytest.approx(row["lookahead_ms"] + row["compute_ms_p95"])
    assert row["speedup_vs_baseline"] > 0 and row["speedup_vs_r9y9"] is None


def test_folded_streaming_row_is_fed_in_real_time(capsys):
    cfg, _ = get_preset("tiny")
    hop, sr = cfg.hop_length, cfg.sample_rate
    res = _bench(capsys, "--mode", "folded-streaming", "--seconds", "0.4", "--block-seconds",
                 "0.2", "--baseline-seconds", "0")
    (row,) = res["rows"]
    frames, block = round(0.4 * sr / hop), round(0.2 * sr / hop)
    assert row["system"].startswith("folded streaming (0.2 s blocks of 1), torch")
    assert row["samples"] == frames * hop and row["rtf"] > 0
    overlap = math.ceil(0.05 * sr / hop) * hop  # the default overlap, whole frames
    assert row["algorithmic_latency_ms"] == pytest.approx(
        ((block - 1 + 3) * hop + overlap) / sr * 1e3)  # tiny's lookahead: 3 frames
    # fed in real time, no frame's audio came before the block it is in had arrived
    assert 0 < row["paced_latency_ms_median"] <= row["paced_latency_ms_p95"] \
        <= row["paced_latency_ms_max"]
    rc = bench_synth.main(["--preset", "tiny", "--seconds", "0.4", "--backend", "torch",
                           "--mode", "folded-streaming", "--block-seconds", "0.2",
                           "--baseline-seconds", "0"])
    assert rc == 0 and "frames fed in real time; a frame's audio came back" in \
        capsys.readouterr().out


def test_all_mode_prints_the_streaming_latency(capsys):
    rc = bench_synth.main(["--preset", "tiny", "--seconds", "0.05", "--backend", "torch",
                           "--baseline-seconds", "0", "--mode", "all"])
    out = capsys.readouterr().out
    assert rc == 0
    for system in ("incremental, torch", "folded", "streaming (1 frame per push), torch"):
        assert system in out
    assert "after the frame arrives = lookahead 3 frames (12.0 ms)" in out


@pytest.mark.parametrize("args", [
    ["--r9y9-src", "{tmp}"],  # no source there
    ["--r9y9-src", "{tmp}/missing"],
    ["--r9y9-src", "{src}", "--preset", "lp-16k"],  # r9y9 has no LP
    ["--r9y9-src", "{src}", "--baseline-seconds", "0"],
])
def test_r9y9_src_errors_are_one_line_before_any_work(args, tmp_path, capsys, monkeypatch):
    src = _write_package(tmp_path / "src", FIRST)
    before = _snapshot(src)
    monkeypatch.setattr(bench_synth, "run", lambda *a, **k: pytest.fail("work started"))
    argv = [a.format(tmp=tmp_path, src=src) for a in args]
    assert bench_synth.main(["--preset", "tiny", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith("dmol bench synth: --r9y9-src")
    assert len(cap.err.strip().splitlines()) == 1
    assert _snapshot(src) == before


def test_r9y9_src_that_fails_to_import_is_one_line(tmp_path, capsys, monkeypatch):
    src = _write_package(tmp_path, {"__init__.py": "", "wavenet.py": "import no_such_dep\n"})
    monkeypatch.setattr(bench_synth, "run", lambda *a, **k: pytest.fail("work started"))
    assert bench_synth.main(["--preset", "tiny", "--r9y9-src", str(src)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "cannot build r9y9's WaveNet" in err and "no_such_dep" in err


@pytest.mark.parametrize("flavour", ["later", "0.1.1"])
def test_r9y9_src_times_its_incremental_forward(flavour, tmp_path, capsys):
    files = LATER if flavour == "later" else FIRST
    src = _write_package(tmp_path / "r9", files)
    before = _snapshot(src)
    # given as the package folder itself for one flavour, as its parent for the other
    given = src / "wavenet_vocoder" if flavour == "later" else src
    res = _bench(capsys, "--mode", "incremental", "--baseline-seconds", "0.004",
                 "--r9y9-src", str(given))
    cfg, _ = get_preset("tiny")
    fake = sys.modules["wavenet_vocoder.wavenet"]
    assert Path(fake.__file__).parent == src / "wavenet_vocoder"
    # built like the preset, with weight norm folded as r9y9's synthesis does
    (kw,) = fake.BUILT
    assert (kw["layers"], kw["stacks"], kw["kernel_size"]) == (cfg.layers, cfg.stacks,
                                                              cfg.kernel_size)
    assert (kw["residual_channels"], kw["gate_channels"], kw["skip_out_channels"]) == (
        cfg.residual_channels, cfg.gate_channels, cfg.skip_channels)
    assert kw["out_channels"] == 3 * cfg.n_mixtures and kw["cin_channels"] == cfg.n_mels
    assert kw["scalar_input"] and kw["upsample_conditional_features"]
    assert kw["gin_channels"] == -1 and not kw["use_speaker_embedding"]
    if flavour == "later":
        assert kw["upsample"]["upsample_scales"] == list(cfg.upsample_scales)
        assert kw["upsample"]["cin_pad"] == kw["cin_pad"] == cfg.cin_pad
        assert res["r9y9"]["unmatched"] == [] and res["r9y9"]["cin_pad"] == cfg.cin_pad
        assert res["r9y9"]["version"] == "unknown (checkout)"  # no version.py: the stand-in
    else:
        assert kw["upsample_scales"] == list(cfg.upsample_scales) and kw["legacy"] is False
        assert res["r9y9"]["unmatched"] == ["cin_pad"] and res["r9y9"]["cin_pad"] == 0
        assert res["r9y9"]["version"] == "0.1.1"
    # one call per torch thread count tried, whole frames of audio, the preset's clamp
    hop = cfg.hop_length
    for call in fake.CALLS:
        assert call["T"] == hop  # 0.004 s at 16 kHz: one 64-sample frame
        assert call["log_scale_min"] == cfg.log_scale_min
    (r9,) = [r for r in res["rows"] if r.get("reference")]
    assert r9["system"].startswith("r9y9/wavenet_vocoder") and r9["samples"] == hop
    assert r9["speedup_vs_r9y9"] == pytest.approx(1.0)
    for row in res["rows"]:
        assert row["speedup_vs_r9y9"] == pytest.approx(row["samples_per_s"]
                                                      / r9["samples_per_s"])
    # the source folder is only read: no bytecode left in it, not left on sys.path
    assert _snapshot(src) == before
    assert str(src) not in sys.path and str(src / "wavenet_vocoder") not in sys.path
