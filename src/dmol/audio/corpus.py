"""Speech corpora on disk: preprocessing audio folders into (audio, log-mel) pairs.

A dmol dataset is a folder::

    DATA_DIR/recipe.json      MelRecipe.to_dict()
    DATA_DIR/manifest.json    {"train": [names], "val": [names], "skipped": [{"path", "error"}],
                               "source": str, "license": str, "preset": str, ...}
    DATA_DIR/train/NAME.npz   audio: float32 (T,) in [-1, 1]; mel: float32 (frames, n_mels)
    DATA_DIR/val/NAME.npz     with T == frames * hop_length

A new dataset is built in a staging folder (``DATA_DIR/.staging-PID-*``) and swapped in at
the end by renames, the manifest last, so a folder with a manifest is complete and a failed or
interrupted run leaves the old dataset as it was. ``preprocess`` refuses an output folder that
is neither empty nor a dmol dataset, and never deletes a file that is not part of the dataset
it replaces. Files get the usual permissions (``0o666 & ~umask``).

Example::

    >>> build_builtin("data/allison", limit=8)         # real speech, CC-BY-SA-3.0
    >>> audio, mel = load_utterance(list_split("data/allison", "train")[0])
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .._fs import (
    default_file_mode,
    describe_os_error,
    fsync_dir,
    pid_alive,
)
from .features import (
    AudioInputWarning,
    CorruptAudioError,
    MelRecipe,
    decode_g722,
    load_audio,
    recipe_for,
)

__all__ = [
    "ASTERISK_NON_SPEECH",
    "AUDIO_SUFFIXES",
    "audio_files",
    "build_builtin",
    "list_split",
    "load_manifest",
    "load_recipe",
    "load_utterance",
    "preprocess",
    "prepare_audio",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".g722")
# audio that preprocess does not read: listed as skipped (with a hint), never silently ignored
UNSUPPORTED_AUDIO_SUFFIXES = (".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif",
                              ".aiff", ".aifc", ".au", ".amr", ".ac3", ".webm", ".caf")
DATASET_ENTRIES = ("train", "val", "recipe.json", "manifest.json")  # what a dataset is made of
BUILTIN_ENTRIES = ("raw", "LICENSE.txt")  # what `dmol data builtin` adds beside it
_STAGING, _REPLACED = ".staging-", ".replaced-"  # our scratch folders inside DATA_DIR
SPLITS = ("train", "val")
PEAK = 0.95  # peak-normalization target: a little headroom below full scale
DEFAULT_TRIM_DB = 40.0  # frames this far below the loudest one count as leading/trailing silence


# ---- reading a dataset ---------------------------------------------------------------------
def _require_dataset(data_dir: str | Path) -> Path:
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"dataset folder {d} does not exist")
    for name in ("recipe.json", "manifest.json"):
        if not (d / name).is_file():
            raise ValueError(
                f"{d} is not a dmol dataset (no {name}); create one with "
                f"`dmol preprocess IN_DIR {d} --preset P` or `dmol data builtin {d}`"
            )
    return d


def load_recipe(data_dir: str | Path) -> MelRecipe:
    """The :class:`MelRecipe` a dataset was made with (``DATA_DIR/recipe.json``)."""
    d = _require_dataset(data_dir)
    return MelRecipe.from_dict(json.loads((d / "recipe.json").read_text(encoding="utf-8")))


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The parsed ``DATA_DIR/manifest.json``."""
    d = _require_dataset(data_dir)
    manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    missing = [k for k in (*SPLITS, "skipped", "source", "license", "preset") if k not in manifest]
    if missing:
        raise ValueError(f"{d / 'manifest.json'} lacks keys {missing}")
    return manifest


def list_split(data_dir: str | Path, split: str) -> list[Path]:
    """Paths of the ``.npz`` utterances of ``split`` ("train" or "val"), in manifest order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    d = Path(data_dir)
    paths = [d / split / f"{name}.npz" for name in load_manifest(d)[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset {d} is incomplete: {len(missing)} {split} file(s) listed in manifest.json "
            f"are missing, e.g. {missing[:3]}; re-run preprocessing"
        )
    return paths


def load_utterance(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``NAME.npz``: ``(audio (T,), mel (frames, n_mels))``, both float32.

    Checks the pairing ``T == frames * hop_length`` (hop_length = T // frames).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "audio" not in z.files or "mel" not in z.files:
                raise ValueError(f"{path} is not a dmol utterance: has {z.files}, needs audio, mel")
            audio, mel = z["audio"], z["mel"]
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read utterance {path}: {e}") from None
    if audio.ndim != 1 or mel.ndim != 2 or mel.shape[0] == 0:
        raise ValueError(
            f"{path}: expected audio (T,) and mel (frames, n_mels), got "
            f"{audio.shape} and {mel.shape}"
        )
    if audio.dtype != np.float32 or mel.dtype != np.float32:
        raise ValueError(f"{path}: expected float32 arrays, got {audio.dtype} and {mel.dtype}")
    if len(audio) % mel.shape[0]:
        raise ValueError(
            f"{path}: {len(audio)} samples is not a whole number of hops for {mel.shape[0]} frames"
        )
    return audio, mel


# ---- atomic writes -------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    ``os.replace`` within one folder is atomic, so readers see the old file or the whole new
    one, never a half-written one; a failure removes the temporary file. The file gets the
    mode a plain ``open`` would give it (mkstemp's 0600 would hide it from other users).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), default_file_mode())
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj: Any) -> None:
    # ASCII (non-ASCII names as \u escapes): readable whatever the reader's locale
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def _write_npz(path: Path, audio: np.ndarray, mel: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.savez(f, audio=audio, mel=mel))


# ---- the output folder ---------------------------------------------------------------------
def _is_dataset(d: Path) -> bool:
    """A folder a dmol command wrote a dataset into (complete or not)."""
    return (d / "manifest.json").is_file() or (d / "recipe.json").is_file()


def _ours(name: str, extra: Sequence[str]) -> bool:
    return name in DATASET_ENTRIES or name in extra or name.startswith((_STAGING, _REPLACED))


def _check_out_dir(out_dir: Path, extra: Sequence[str] = ()) -> None:
    """Refuse, before anything is written, an output folder we must not replace: a file, a
    non-empty folder that is not a dmol dataset, a dataset whose splits hold foreign files, or
    a folder we cannot write to."""
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise ValueError(f"output {out_dir} exists and is not a folder")
        entries = list(out_dir.iterdir())
        if entries and not _is_dataset(out_dir) and not all(_ours(e.name, extra) for e in entries):
            shown = ", ".join(sorted(e.name for e in entries)[:4])
            raise ValueError(
                f"{out_dir} is not empty and is not a dmol dataset (no manifest.json or "
                f"recipe.json; it holds {shown}{', ...' if len(entries) > 4 else ''}): refusing "
                f"to write into it; choose a new or empty folder"
            )
        for name in DATASET_ENTRIES:
            p = out_dir / name
            if (p.exists() or p.is_symlink()) and (p.is_dir() != (name in SPLITS)
                                                   or p.is_symlink()):
                raise ValueError(f"{p} is not what a dmol dataset has there: {out_dir} is not a "
                                 f"dmol dataset; refusing to replace it")
        for split in SPLITS:
            if (out_dir / split).is_dir():
                foreign = sorted(p.name for p in (out_dir / split).iterdir()
                                 if not (p.suffix == ".npz" and p.is_file())
                                 and not (p.name.startswith(".") and p.name.endswith(".tmp")))
                if foreign:
                    raise ValueError(
                        f"{out_dir / split} holds files that are not dataset utterances "
                        f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): "
                        f"refusing to replace it; move them away or choose another folder"
                    )
    check_writable(out_dir, str(out_dir))


def check_writable(path: Path, label: str) -> None:
    """``path`` (an existing folder, or one to create) can be written: it, or its nearest
    existing parent, is a folder we may write into. ``label`` names it in the error."""
    target = path
    if not path.exists():
        target = path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            raise ValueError(f"cannot create {label}: {target} is not a folder")
    if not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to {target}: permission denied")


def _make_dirs(d: Path) -> list[Path]:
    """``mkdir -p d``; returns the folders it created, deepest last."""
    missing = []
    p = d
    while not p.exists():
        missing.append(p)
        p = p.parent
    for m in reversed(missing):
        m.mkdir()
    return list(reversed(missing))


def _scratch_pid(name: str) -> int | None:
    m = re.match(rf"^(?:{re.escape(_STAGING)}|{re.escape(_REPLACED)})(\d+)-", name)
    return int(m.group(1)) if m else None


def _remove_stale_scratch(out_dir: Path) -> None:
    """Scratch folders of runs that died (their process is gone), and the ``.staging`` of
    earlier versions: never anything of a run that is still going."""
    for p in out_dir.iterdir():
        pid = _scratch_pid(p.name)
        if p.name == ".staging" or (pid is not None and pid != os.getpid() and not pid_alive(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _commit(staging: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Swap the dataset entries ``names`` (ending with manifest.json) from ``staging`` into
    ``out_dir`` by renames: the old manifest goes first, the new one comes last, so readers
    see the old dataset, then (for a few renames) none, then the new one; never a mix."""
    old = Path(tempfile.mkdtemp(prefix=f"{_REPLACED}{os.getpid()}-", dir=out_dir))
    order = ["manifest.json", *[n for n in names if n != "manifest.json"]]
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in order:
            if (out_dir / name).exists():
                os.replace(out_dir / name, old / name)
                moved_out.append(name)
        for name in [*order[1:], "manifest.json"]:
            os.replace(staging / name, out_dir / name)
            moved_in.append(name)
    except BaseException:  # put the old dataset back
        for name in reversed(moved_in):
            os.replace(out_dir / name, staging / name)
        for name in reversed(moved_out):
            os.replace(old / name, out_dir / name)
        shutil.rmtree(old, ignore_errors=True)
        raise
    fsync_dir(out_dir)
    shutil.rmtree(old, ignore_errors=True)


# ---- preprocessing -------------------------------------------------------------------------
def _find_audio(in_dir: Path) -> list[Path]:
    """Audio files (AUDIO_SUFFIXES) anywhere under ``in_dir``, sorted."""
    return sorted(
        p for p in in_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
    )


def audio_files(items: Iterable[str | os.PathLike]) -> list[Path]:
    """The audio files named, and those anywhere under the folders named, in order (each
    folder's sorted). A one-line error, before any is read, for a missing path, a file that is
    not audio (AUDIO_SUFFIXES) or a folder without audio."""
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = _find_audio(item)
            if not found:
                raise ValueError(f"{item} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
            files += found
        elif item.is_file():
            if item.suffix.lower() not in AUDIO_SUFFIXES:
                raise ValueError(f"{item} is not an audio file ({', '.join(AUDIO_SUFFIXES)})")
            files.append(item)
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return files


def _find_unsupported(in_dir: Path) -> list[Path]:
    """Audio files in formats preprocess does not read (UNSUPPORTED_AUDIO_SUFFIXES), sorted."""
    return sorted(p for p in in_dir.rglob("*")
                  if p.suffix.lower() in UNSUPPORTED_AUDIO_SUFFIXES and p.is_file())


_MAX_NAME_BYTES = 200  # file names stay below the usual 255-byte limit with ".npz" and temp parts


def _names(files: Sequence[Path], root: Path) -> list[str]:
    """Unique file-system-safe names from paths relative to ``root`` (``a/b.wav`` -> ``a__b``).

    Letters and digits of any script are kept (NFC-normalized, so ``été`` stays ``été``);
    other characters become ``_``. Names differing only in case get a ``-2`` suffix, so a
    dataset copied to a case-insensitive disk keeps every file. The manifest's ``sources``
    maps each name back to its file.
    """
    names, seen = [], set()
    for f in files:
        rel = "__".join(f.relative_to(root).with_suffix("").parts)
        base = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", rel)).lstrip(".") or "_"
        while len(base.encode()) > _MAX_NAME_BYTES:
            base = base[:-1]
        name, k = base, 1
        while name.casefold() in seen:  # a.wav next to a.flac, or A.wav next to a.wav
            k += 1
            name = f"{base}-{k}"
        seen.add(name.casefold())
        names.append(name)
    return names


def _split(names: Sequence[str], val_fraction: float, min_val: int, seed: int) -> list[str]:
    """Validation names: a seeded shuffle of the sorted names, at least ``min_val`` of them
    while leaving at least one for training."""
    n = len(names)
    n_val = max(min_val, round(val_fraction * n))
    n_val = min(n_val, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return sorted(names[i] for i in order[:n_val])


def prepare_audio(path: str | Path, recipe: MelRecipe, trim_db: float | None = DEFAULT_TRIM_DB
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An audio file as a dataset utterance: load, trim, peak-normalize, crop to whole hops.

    Returns (audio (frames * hop,), mel (frames, n_mels)), exactly what ``dmol preprocess``
    stores for that file.
    """
    return _prepare(Path(path), recipe, trim_db)


def _prepare(path: Path, recipe: MelRecipe, trim_db: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Load, trim, peak-normalize, crop to whole hops; return (audio, mel)."""
    import librosa

    x = load_audio(path, recipe.sample_rate, peak=None)  # no clipping: normalized below
    if trim_db is not None:
        x, _ = librosa.effects.trim(
            x, top_db=trim_db, frame_length=recipe.win_length, hop_length=recipe.hop_length
        )
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak < 1e-4:  # below ~ -80 dBFS nothing is left to normalize but noise
        raise CorruptAudioError(path, f"silent (peak {peak:.2g})")
    frames = len(x) // recipe.hop_length
    if frames < 2:
        raise CorruptAudioError(path, f"too short after trimming ({len(x)} samples)")
    x = x[: frames * recipe.hop_length].astype(np.float64) * (PEAK / peak)
    x = x.astype(np.float32)
    return x, recipe.compute(x)


def _warn(msg: str) -> None:
    tqdm.write(f"warning: {msg}", file=sys.stderr)


def _prepare_noting(path: Path, recipe: MelRecipe, trim_db: float | None,
                    notes: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_prepare`, with what load_audio had to say about the file (clipped at the
    source, upsampled) printed as a warning and appended to ``notes``."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AudioInputWarning)
            return _prepare(path, recipe, trim_db)
    finally:  # outside the recording context: re-shown warnings are not recorded again
        for w in caught:
            if isinstance(w.message, AudioInputWarning):
                _warn(str(w.message))
                notes.append({"path": str(path), "note": w.message.reason})
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _preprocess_files(
    files: Sequence[Path],
    root: Path,
    out_dir: Path,
    preset: str,
    *,
    val_fraction: float,
    min_val: int,
    seed: int,
    trim_db: float | None,
    progress: bool,
    source: str,
    license: str,
    extra: dict[str, Any] | None = None,
    skipped: Sequence[dict[str, str]] = (),
    extra_files: dict[str, bytes] | None = None,
    ours: Sequence[str] = (),
) -> dict[str, Any]:
    recipe = recipe_for(preset)
    _check_options(val_fraction, min_val, trim_db)
    _check_out_dir(out_dir, ours)
    created = _make_dirs(out_dir)
    _remove_stale_scratch(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=out_dir))
    try:
        manifest = _build(files, root, staging, recipe, preset, val_fraction=val_fraction,
                          min_val=min_val, seed=seed, trim_db=trim_db, progress=progress,
                          source=source, license=license, extra=extra, skipped=skipped,
                          extra_files=extra_files or {}, tqdm=tqdm)
        _commit(staging, out_dir, [*SPLITS, "recipe.json", *(extra_files or {}), "manifest.json"])
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        for d in reversed(created):  # folders this run made: gone again, if nothing else is there
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, OSError):
            raise OSError(e.errno, f"{describe_os_error(e)}; {out_dir} was left as it was"
                          ) from None
        raise
    shutil.rmtree(staging, ignore_errors=True)
    if progress:
        print(
            f"wrote {out_dir}: {len(manifest['train'])} train / {len(manifest['val'])} val "
            f"utterances, {manifest['seconds'] / 60:.1f} min of audio, "
            f"{len(manifest['skipped'])} skipped"
        )
    return manifest


def _check_options(val_fraction: float, min_val: int, trim_db: float | None) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    if isinstance(min_val, bool) or int(min_val) != min_val or min_val < 0:
        raise ValueError(f"min_val must be an integer >= 0, got {min_val!r}")
    if trim_db is not None and not (trim_db > 0 and trim_db < float("inf")):
        raise ValueError(f"trim_db must be positive and finite or None, got {trim_db!r}")


def _build(files, root, staging: Path, recipe: MelRecipe, preset: str, *, val_fraction, min_val,
           seed, trim_db, progress, source, license, extra, skipped, extra_files, tqdm
           ) -> dict[str, Any]:
    """Write a complete dataset into the (empty) folder ``staging``; return its manifest."""
    skipped = [dict(s) for s in skipped]
    considered = len(files) + len(skipped)
    for s in skipped:
        _warn(f"skipping {s['path']}: {s['error']}")
    kept, sources, notes, seconds = [], {}, [], 0.0
    for path, name in tqdm(
        list(zip(files, _names(files, root), strict=True)),
        desc="preprocess",
        unit="file",
        disable=not progress,
    ):
        try:
            audio, mel = _prepare_noting(path, recipe, trim_db, notes)
        except (CorruptAudioError, ImportError) as e:
            reason = e.reason if isinstance(e, CorruptAudioError) else str(e)
            _warn(f"skipping {path}: {reason}")
            skipped.append({"path": str(path), "error": reason})
            continue
        _write_npz(staging / f"{name}.npz", audio, mel)
        kept.append(name)
        sources[name] = path.relative_to(root).as_posix()
        seconds += len(audio) / recipe.sample_rate
    if not kept:
        shown = "; ".join(f"{s['path']}: {s['error']}" for s in skipped[:3])
        raise ValueError(
            f"no usable audio among {considered} file(s): all were "
            f"skipped ({shown}{'; ...' if len(skipped) > 3 else ''})"
        )
    if len(kept) == 1:
        _warn("only one usable file: it goes to train and the val split is empty")

    val = set(_split(kept, val_fraction, min_val, seed))
    for split in SPLITS:
        (staging / split).mkdir()
    for name in kept:
        os.replace(staging / f"{name}.npz",
                   staging / ("val" if name in val else "train") / f"{name}.npz")
    _write_json(staging / "recipe.json", recipe.to_dict())
    for name, data in extra_files.items():
        _atomic_write(staging / name, lambda f, d=data: f.write(d))
    manifest = {
        "train": [n for n in kept if n not in val],
        "val": [n for n in kept if n in val],
        "skipped": skipped,
        "source": source,
        "license": license,
        "preset": preset,
        "seed": seed,
        "val_fraction": val_fraction,
        "trim_db": trim_db,
        "peak": PEAK,
        "seconds": round(seconds, 3),
        "source_root": str(root),
        "sources": sources,  # dataset name -> its file, relative to source_root
        "notes": notes,  # inputs that were clipped at the source or upsampled
        **(extra or {}),
    }
    _write_json(staging / "manifest.json", manifest)
    return manifest


def preprocess(
    in_dir: str | Path,
    out_dir: str | Path,
    preset: str,
    *,
    val_fraction: float = 0.05,
    min_val: int = 1,
    seed: int = 0,
    trim_db: float | None = DEFAULT_TRIM_DB,
    progress: bool = True,
    source: str | None = None,
    license: str = "unknown",
) -> dict[str, Any]:
    """Turn a folder of wav/flac/g722 files (searched recursively) into a dmol dataset.

    Each file is resampled to the preset's rate, trimmed of leading/trailing silence quieter
    than ``trim_db`` below its peak (``None``: no trimming), peak-normalized to 0.95, cropped
    to a whole number of hops and paired with its log-mel. Unreadable files are named in a
    warning and in ``manifest["skipped"]``; the rest are kept. The validation split is a
    ``seed``-determined ``val_fraction`` of the usable files (at least ``min_val``).

    Returns the manifest. Example::

        >>> m = preprocess("wavs/", "data/mine", "small-16k")
        >>> len(m["train"]), len(m["val"])
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if in_dir.exists() and not in_dir.is_dir():
        raise ValueError(f"input {in_dir} is not a folder")
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input folder {in_dir} does not exist")
    # everything is checked before any work, and before the output folder is touched
    recipe_for(preset)
    _check_options(val_fraction, min_val, trim_db)
    if in_dir.resolve() in out_dir.resolve().parents:
        raise ValueError(f"output {out_dir} lies inside the input {in_dir}: its files would be "
                         f"read as input audio next time; choose a folder outside it")
    _check_out_dir(out_dir)
    files = _find_audio(in_dir)
    unsupported = _find_unsupported(in_dir)
    if not files:
        other = (f"; {len(unsupported)} file(s) in formats it does not read "
                 f"({', '.join(sorted({p.suffix.lower() for p in unsupported}))}): convert them "
                 f"to .wav or .flac" if unsupported else "")
        raise ValueError(
            f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found under {in_dir}{other}"
        )
    skipped = [{"path": str(p), "error": f"format {p.suffix.lower()} is not supported (only "
                f"{', '.join(AUDIO_SUFFIXES)}): convert it, e.g. `ffmpeg -i IN OUT.wav`"}
               for p in unsupported]
    return _preprocess_files(
        files,
        in_dir,
        out_dir,
        preset,
        val_fraction=val_fraction,
        min_val=min_val,
        seed=seed,
        trim_db=trim_db,
        progress=progress,
        source=source or str(in_dir),
        license=license,
        skipped=skipped,
    )


# ---- the built-in corpus -------------------------------------------------------------------
ASTERISK_PACKAGE = "asterisk-core-sounds-en-g722"
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
ASTERISK_LICENSE = (
    "Asterisk core sound prompts (English, voice of Allison Smith), Debian package "
    f"{ASTERISK_PACKAGE}.\n"
    "Copyright (c) 2003-2010 Allison Smith; financial contributions by Digium, Inc.\n"
    "Licensed under the Creative Commons Attribution-ShareAlike 3.0 Unported licence "
    "(CC-BY-SA-3.0): https://creativecommons.org/licenses/by-sa/3.0/\n"
    "These files are decoded from G.722 and trimmed/normalized: derived works share the licence.\n"
)
ESPEAK_LICENSE = (
    "Speech synthesized by the espeak-ng program (itself GPL-3.0-or-later) from sentences "
    "written for dmol; the sentences and this audio are released under dmol's MIT licence.\n"
)

# Plain sentences for the espeak-ng fallback: varied phonemes, questions and numbers.
ESPEAK_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please leave a message after the tone.",
    "A vocoder turns a spectrogram back into a waveform.",
    "She sells sea shells by the sea shore.",
    "How many minutes are left before the train departs?",
    "Seven hundred and forty two people answered the survey.",
    "The weather tomorrow will be cloudy with a chance of rain.",
    "Every sample is predicted from the samples before it.",
    "Would you like to hear that again?",
    "Thank you for calling, your call is important to us.",
    "The museum opens at nine and closes at half past five.",
    "Bright yellow leaves drifted slowly across the quiet pond.",
    "Mixtures of logistics describe the next value of the signal.",
    "Our office is closed on weekends and public holidays.",
    "He measured the distance twice before cutting the board.",
    "Jazz music filled the small room until midnight.",
    "Press one for sales, or two for technical support.",
    "Thirteen thirsty thrushes thought about the thunder.",
    "The red balloon floated high above the village square.",
    "Could you spell your last name, please?",
    "Numbers like zero, four, eight and fifteen are easy to say.",
    "A gentle breeze carried the smell of fresh bread.",
    "The committee will review the proposal next Thursday.",
    "Mountains rise sharply beyond the northern valley.",
    "Listen carefully, the menu options have changed.",
    "Old clocks ticked loudly in the empty hallway.",
    "Which of these three doors leads to the garden?",
    "The children laughed as the puppy chased its tail.",
    "Sound travels faster in water than in air.",
    "Goodbye, and have a wonderful evening.",
]


#: Asterisk prompts that are not speech: the package's transcripts (``core-sounds-LANG.txt``)
#: give them in brackets ("[ascending tones]", "<beep ascending>", "(ahooga)"); the same names
#: in every language. (The ``silence/`` folder is the rest.)
ASTERISK_NON_SPEECH = frozenset({"ascending-2tone", "descending-2tone", "beep", "beeperr",
                                 "confbridge-join", "confbridge-leave", "tt-monkeys"})


def asterisk_g722_files() -> list[Path]:
    """The English G.722 prompts of the Asterisk sounds package, sorted, without the
    ``silence/`` folder (those prompts are pure silence, not speech)."""
    files: Iterable[Path]
    try:
        out = subprocess.run(
            ["dpkg", "-L", ASTERISK_PACKAGE], capture_output=True, text=True, check=True
        ).stdout
        files = (Path(line) for line in out.splitlines() if line.endswith(".g722"))
    except (OSError, subprocess.CalledProcessError):
        files = ASTERISK_ROOT.glob("**/*.g722") if ASTERISK_ROOT.is_dir() else ()
    # the en/ and en_US/ links point at the same files: keep each real file once
    unique = {p.resolve(): p for p in files if p.is_file() and "silence" not in p.parts}
    return sorted(unique)


def _pick(items: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` items spread evenly over ``items`` (all of them for None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _g722_available() -> bool:
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True


def _raw_from_asterisk(raw: Path, limit: int | None, progress: bool) -> list[Path]:
    import soundfile as sf
    every = asterisk_g722_files()
    root = Path(os.path.commonpath([s.parent for s in every]))  # names do not depend on limit
    srcs = _pick(every, limit)
    out = []
    for src in tqdm(srcs, desc="decode G.722", unit="file", disable=not progress):
        dst = raw / src.relative_to(root).with_suffix(".wav")
        if not dst.is_file():  # decoded by an earlier, interrupted run
            audio = decode_g722(src)
            _atomic_write(
                dst, lambda f, a=audio: sf.write(f, a, 16000, format="WAV", subtype="PCM_16")
            )
        out.append(dst)
    return out


def _raw_from_espeak(raw: Path, limit: int | None, progress: bool) -> list[Path]:
    out = []
    sentences = _pick(ESPEAK_SENTENCES, limit)
    for i, text in enumerate(tqdm(sentences, desc="espeak-ng", unit="file", disable=not progress)):
        dst = raw / f"espeak_{i:03d}.wav"
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp")
            try:
                subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp), text], check=True,
                               capture_output=True)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)
        out.append(dst)
    return out


def build_builtin(
    out_dir: str | Path,
    preset: str = "small-16k",
    *,
    limit: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Assemble the built-in real-speech corpus into ``out_dir`` and preprocess it.

    The source is the Asterisk English prompts (one female speaker, 16 kHz G.722, CC-BY-SA-3.0),
    decoded with the ``G722`` package into ``out_dir/raw/*.wav``. Without them, sentences
    synthesized by ``espeak-ng`` stand in (a printed message says so). ``limit`` takes that
    many files spread evenly over the corpus. The licence is printed, stored in the manifest
    and in ``out_dir/LICENSE.txt``. A complete folder made with the same preset and limit is
    reused as is.

    Example::

        >>> m = build_builtin("data/allison", limit=16)
    """
    out_dir = Path(out_dir)
    recipe_for(preset)
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    _check_out_dir(out_dir, BUILTIN_ENTRIES)  # before raw/ is written into it
    if (out_dir / "manifest.json").is_file():
        try:
            manifest = load_manifest(out_dir)
            list_split(out_dir, "train"), list_split(out_dir, "val")
        except (ValueError, FileNotFoundError):
            manifest = None
        if manifest and manifest.get("preset") == preset and manifest.get("limit") == limit:
            print(f"reusing the complete built-in corpus in {out_dir}")
            return manifest

    raw = out_dir / "raw"
    have_sounds = _g722_available() and bool(asterisk_g722_files())
    if have_sounds:
        files = _raw_from_asterisk(raw, limit, progress)
        source, license = f"{ASTERISK_PACKAGE} (Debian), decoded with G722", ASTERISK_LICENSE
    elif shutil.which("espeak-ng"):
        print(
            f"note: the {ASTERISK_PACKAGE} prompts or the G722 decoder are missing, so the "
            "built-in corpus falls back to speech synthesized by espeak-ng"
        )
        files = _raw_from_espeak(raw, limit, progress)
        source, license = "espeak-ng synthesis of dmol's sentences", ESPEAK_LICENSE
    else:
        raise RuntimeError(
            "no source for the built-in corpus: install the Debian package "
            f"{ASTERISK_PACKAGE} (apt-get install {ASTERISK_PACKAGE}) and the PyPI package "
            "G722 (pip install G722), or at least espeak-ng (apt-get install espeak-ng)"
        )
    print(f"licence of the built-in corpus:\n{license}")
    return _preprocess_files(
        files,
        raw,
        out_dir,
        preset,
        val_fraction=0.05,
        min_val=1,
        seed=seed,
        trim_db=DEFAULT_TRIM_DB,
        progress=progress,
        source=source,
        license=license,
        extra={"limit": limit},
        extra_files={"LICENSE.txt": license.encode()},  # replaced with the dataset, not before
        ours=BUILTIN_ENTRIES,
    )
