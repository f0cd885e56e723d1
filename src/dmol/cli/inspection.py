"""See what a WaveNet predicts: its output distribution over a real utterance, as a picture.

`dmol inspect`: the command line of :func:`dmol.wavenet.inspection.inspect_checkpoint`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from dmol._fs import describe_os_error
from dmol.audio.corpus import check_writable
from dmol.audio.features import AudioInputWarning
from dmol.wavenet.inspection import _check_numbers, inspect_checkpoint


def _output_path(out: str | None, wav: Path, inputs: list[Path]) -> Path:
    """Where the picture goes: ``--out`` (a folder gets ``WAV.inspect.png`` inside), never one
    of the inputs, and in a format matplotlib writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    default = wav.with_suffix(".inspect.png").name
    path = Path(out) if out else Path(default)
    if path.is_dir():
        path = path / default
    for i in inputs:
        if path.resolve() == i.resolve() or (path.exists() and i.exists()
                                             and path.samefile(i)):
            raise ValueError(f"--out {path} is one of the inputs: it would be overwritten")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {path}: {parent} is a file, not a folder")
    check_writable(path.parent, f"--out {path}")  # before the model runs, not after
    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise ValueError(f"--out {path}: a picture file is expected (.png, .pdf, .svg...), "
                         f"not {path.suffix or 'a name without extension'}")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dmol inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a checkpoint, a run folder (its newest) or 'pretrained'")
    p.add_argument("wav")
    p.add_argument("--out", default=None,
                   help="PNG path, or a folder (default: WAV name + .inspect.png, here)")
    p.add_argument("--start", type=float, default=None, help="window start in seconds")
    p.add_argument("--window-ms", type=float, default=100.0)
    p.add_argument("--max-seconds", type=float, default=4.0)
    a = p.parse_args(argv)

    def fail(msg: str, rc: int) -> int:
        print(f"dmol inspect: error: {msg}", file=sys.stderr)
        return rc

    # the arguments first: a mistake there costs no model loading
    try:
        _check_numbers(a.start, a.window_ms, a.max_seconds)
        out = _output_path(a.out, Path(a.wav), [Path(a.wav), Path(a.checkpoint)])
    except ValueError as e:
        return fail(str(e), 2)
    caught: list[warnings.WarningMessage] = []
    try:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AudioInputWarning)
                path = inspect_checkpoint(a.checkpoint, a.wav, out, start_seconds=a.start,
                                          window_ms=a.window_ms, max_seconds=a.max_seconds)
        finally:  # outside the recording context: re-shown warnings are not recorded again
            for w in caught:
                if isinstance(w.message, AudioInputWarning):
                    print(f"dmol inspect: warning: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    except OSError as e:  # a missing file, a folder that is a file, a full disk
        return fail(describe_os_error(e), 1)
    except (ValueError, RuntimeError) as e:  # damaged checkpoint or audio, a model mismatch
        return fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, 1)
    except KeyboardInterrupt:
        print("dmol inspect: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
