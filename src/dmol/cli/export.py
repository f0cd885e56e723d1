"""`dmol export`: a training run's inference bundle
(:func:`dmol.wavenet.checkpoint.export_model`)."""

from __future__ import annotations

import argparse
import sys

from dmol.wavenet.checkpoint import export_model


def main(argv: list[str] | None = None) -> int:
    """``dmol export RUN_OR_CHECKPOINT OUT.pt``: write the inference bundle of a training run."""
    p = argparse.ArgumentParser(prog="dmol export", description=main.__doc__)
    p.add_argument("source", help="a run folder (its newest checkpoint), a ckpt_*.pt file, a "
                                  "bundle, or 'pretrained'")
    p.add_argument("out", help="bundle file to write (a .sha256 sidecar is written beside it)")
    p.add_argument("--fit-pitch", metavar="DATA", default=None,
                   help="fit a learned F0 estimate to harvest's F0 of this dataset's training "
                        "split (the model's own data) and add it to the bundle: taps and clock "
                        "follow it where it hears a pitch (docs/quality.md, session 19)")
    p.add_argument("--fit-pitch-audio", metavar="PATH", nargs="+", default=[],
                   help="with --fit-pitch: audio files or folders of other voices to fit the "
                        "estimate on too, so that it knows registers the training voice lacks "
                        "(docs/quality.md, session 21)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    try:
        dst = export_model(a.source, a.out, pitch_data=a.fit_pitch,
                           pitch_audio=a.fit_pitch_audio, progress=not a.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"dmol export: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    return 0
