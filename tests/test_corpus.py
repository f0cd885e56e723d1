"""dmol.audio.corpus: preprocessing, the on-disk dataset format and the built-in corpus."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import librosa
import numpy as np
import pytest
import soundfile as sf

import dmol.audio.corpus as corpus
from dmol.audio.corpus import (
    build_builtin,
    list_split,
    load_manifest,
    load_recipe,
    load_utterance,
    preprocess,
)
from dmol.audio.features import recipe_for
from dmol.cli.data import data_main, preprocess_main
from helpers import read_only

TINY = recipe_for("tiny")
HAVE_ASTERISK = corpus._g722_available() and bool(corpus.asterisk_g722_files())


def voiced(seconds: float, sr: int, f0: float, pad: float = 0.0) -> np.ndarray:
    """Five harmonics of f0 under a Hann envelope, with ``pad`` seconds of silence each side."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.15 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6)) * np.hanning(len(t))
    z = np.zeros(int(pad * sr))
    return np.concatenate([z, x, z]).astype(np.float32)


def make_folder(root, n=4, corrupt=True):
    """n good files (nested folder, a flac, a 22.05 kHz stereo wav) plus a corrupt x.wav."""
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        x = voiced(0.3, 16000, 150.0 + 20 * i)
        sf.write(root / ("sub" if i % 2 else "") / f"u{i}.wav", x, 16000)
    sf.write(root / "f.flac", voiced(0.3, 16000, 300.0), 16000)
    y = voiced(0.3, 22050, 200.0)
    sf.write(root / "stereo.wav", np.stack([y, y], axis=1), 22050)
    (root / "notes.txt").write_text("not audio")
    if corrupt:
        (root / "x.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    return root


def speech_stats(audio: np.ndarray, sr: int) -> dict[str, float]:
    """Duration, RMS and three spectral cues that separate speech from noise or silence."""
    power = np.abs(librosa.stft(audio, n_fft=512, hop_length=128)) ** 2
    frame_energy = np.log(power.sum(0) + 1e-10)
    return {
        "seconds": len(audio) / sr,
        "rms": float(np.sqrt(np.mean(audio**2))),
        # voiced speech puts almost all its energy below 4 kHz; white noise spreads it evenly
        "below_4k": float(power[: int(4000 * 512 / sr) + 1].sum() / power.sum()),
        # harmonics and formants make speech spectra peaky (flatness near 0; white noise ~0.56)
        "flatness": float(librosa.feature.spectral_flatness(S=np.sqrt(power)).mean()),
        # syllables come and go: frame energy swings by orders of magnitude
        "energy_swing": float(frame_energy.std()),
    }


def looks_like_speech(s: dict[str, float]) -> bool:
    return (
        s["seconds"] > 0.3
        and s["rms"] > 0.05
        and s["below_4k"] > 0.8
        and s["flatness"] < 0.2
        and s["energy_swing"] > 1.0
    )


def test_speech_criteria_reject_noise_and_silence():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.95, 0.95, 16000).astype(np.float32)
    hum = (0.01 * np.sin(2 * np.pi * 50 * np.arange(16000) / 16000)).astype(np.float32)
    assert not looks_like_speech(speech_stats(noise, 16000))
    assert not looks_like_speech(speech_stats(hum, 16000))


# ---- preprocess ----------------------------------------------------------------------------
def test_preprocess_keeps_good_files_and_names_the_corrupt_one(tmp_path, capsys):
    src = make_folder(tmp_path / "in")
    m = preprocess(src, tmp_path / "out", "tiny", progress=False)

    assert [s["path"] for s in m["skipped"]] == [str(src / "x.wav")]
    assert m["skipped"][0]["error"]
    assert "x.wav" in capsys.readouterr().err
    names = m["train"] + m["val"]
    assert sorted(names) == ["f", "stereo", "sub__u1", "sub__u3", "u0", "u2"]
    assert len(m["val"]) == 1 and m["preset"] == "tiny" and m["source"] == str(src)
    assert load_manifest(tmp_path / "out") == m
    assert load_recipe(tmp_path / "out") == TINY
    assert json.loads((tmp_path / "out" / "recipe.json").read_text()) == TINY.to_dict()

    for split in ("train", "val"):
        for path in list_split(tmp_path / "out", split):
            audio, mel = load_utterance(path)
            assert audio.dtype == mel.dtype == np.float32
            assert len(audio) == mel.shape[0] * TINY.hop_length and mel.shape[1] == TINY.n_mels
            assert np.abs(audio).max() == pytest.approx(corpus.PEAK, abs=1e-6)
            np.testing.assert_array_equal(mel, TINY.compute(audio))


def test_preprocess_resamples_and_trims_silence(tmp_path):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", voiced(0.5, 22050, 180.0, pad=0.5), 22050)
    preprocess(tmp_path / "in", tmp_path / "out", "tiny", progress=False, min_val=0)
    audio, _ = load_utterance(list_split(tmp_path / "out", "train")[0])
    # 1.5 s at 22.05 kHz -> 0.5 s of sound at 16 kHz; the Hann edges are partly trimmed too
    assert 0.25 * 16000 < len(audio) < 0.55 * 16000

    preprocess(tmp_path / "in", tmp_path / "untrimmed", "tiny", progress=False, trim_db=None)
    audio, _ = load_utterance(list_split(tmp_path / "untrimmed", "train")[0])
    assert len(audio) == (24000 // 64) * 64


def test_split_is_deterministic_by_seed(tmp_path):
    names = [f"n{i:02d}" for i in range(40)]
    assert corpus._split(names, 0.1, 1, seed=3) == corpus._split(names, 0.1, 1, seed=3)
    assert len({tuple(corpus._split(names, 0.1, 1, seed=s)) for s in range(5)}) > 1
    assert len(corpus._split(names, 0.25, 1, 0)) == 10
    assert len(corpus._split(names, 0.0, 3, 0)) == 3
    assert len(corpus._split(names[:2], 0.9, 1, 0)) == 1  # train never empty

    src = make_folder(tmp_path / "in", n=6, corrupt=False)
    a = preprocess(src, tmp_path / "a", "tiny", progress=False, val_fraction=0.3, seed=7)
    b = preprocess(src, tmp_path / "b", "tiny", progress=False, val_fraction=0.3, seed=7)
    assert (a["train"], a["val"]) == (b["train"], b["val"]) and len(a["val"]) == 2


def test_preprocess_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        preprocess(tmp_path / "missing", tmp_path / "out", "tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        preprocess(tmp_path / "empty", tmp_path / "out", "tiny")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"RIFF garbage")
    sf.write(tmp_path / "bad" / "quiet.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(ValueError, match="all were skipped"):
        preprocess(tmp_path / "bad", tmp_path / "out", "tiny", progress=False)
    with pytest.raises(ValueError, match="known presets"):
        preprocess(tmp_path / "bad", tmp_path / "out", "huge")


def test_rerun_replaces_stale_files(tmp_path):
    src = make_folder(tmp_path / "in", corrupt=False)
    preprocess(src, tmp_path / "out", "tiny", progress=False)
    (src / "u0.wav").unlink()
    m = preprocess(src, tmp_path / "out", "tiny", progress=False)
    on_disk = sorted(p.stem for p in (tmp_path / "out").glob("*/*.npz"))
    assert on_disk == sorted(m["train"] + m["val"]) and "u0" not in on_disk
    assert sorted(os.listdir(tmp_path / "out")) == ["manifest.json", "recipe.json", "train", "val"]


# ---- atomic writes -------------------------------------------------------------------------
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.npz"
    corpus._write_npz(target, np.zeros(64, np.float32), np.zeros((1, 20), np.float32))
    before = target.read_bytes()

    def half_write(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        corpus._write_npz(target, np.ones(64, np.float32), np.ones((1, 20), np.float32))
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.npz"]


def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_interrupted_preprocess_leaves_the_old_dataset_intact(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "in", corrupt=False)
    out = tmp_path / "out"
    m = preprocess(src, out, "tiny", progress=False)
    before = snapshot(out)
    calls = []
    real = corpus._prepare

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(corpus, "_prepare", flaky)
    with pytest.raises(KeyboardInterrupt):
        preprocess(src, out, "tiny", progress=False, seed=5)
    assert snapshot(out) == before  # nothing half-written, nothing left behind
    assert load_manifest(out) == m and len(list_split(out, "train")) == len(m["train"])


_BLOCK_AFTER_ONE = """
import sys, threading
import dmol.audio.corpus as c
from dmol.cli.data import preprocess_main
real, calls = c._prepare, []
def prepare(*args):
    calls.append(1)
    if len(calls) == 2:  # the first file is staged: say so, then wait for the signal
        print("ready", flush=True)
        threading.Event().wait()
    return real(*args)
c._prepare = prepare
sys.exit(preprocess_main(sys.argv[1:]))
"""


def test_sigterm_during_preprocess_leaves_the_old_dataset_intact(tmp_path):
    src = make_folder(tmp_path / "in", corrupt=False)
    out = tmp_path / "out"
    preprocess(src, out, "tiny", progress=False)
    before = snapshot(out)
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLOCK_AFTER_ONE, str(src), str(out), "--preset", "tiny",
         "--quiet", "--seed", "9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout.readline().strip() == "ready"  # blocks until then: no timing
        assert [p.name for p in out.iterdir() if p.name.startswith(".staging-")]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "interrupted (SIGTERM)" in err
    assert snapshot(out) == before  # the staging folder went with it


# ---- the output folder: checked first, replaced as a whole -------------------------------
def test_preprocess_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    foreign = tmp_path / "mine"
    for split in ("train", "val"):  # the user's own npz files, in folders named like ours
        (foreign / split).mkdir(parents=True)
        np.savez(foreign / split / "weights.npz", w=np.arange(3))
    (foreign / "notes.txt").write_text("my notes")
    before = snapshot(foreign)
    with pytest.raises(ValueError, match="not a dmol dataset"):
        preprocess(src, foreign, "tiny", progress=False)
    assert snapshot(foreign) == before
    assert preprocess_main([str(src), str(foreign), "--preset", "tiny", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "not a dmol dataset" in err and "Traceback" not in err and err.count("\n") == 1
    assert snapshot(foreign) == before
    # an empty folder is fine, and so is one that does not exist yet
    (tmp_path / "empty").mkdir()
    preprocess(src, tmp_path / "empty", "tiny", progress=False)
    preprocess(src, tmp_path / "new" / "deeper", "tiny", progress=False)
    assert load_manifest(tmp_path / "new" / "deeper")["train"]


def test_preprocess_out_that_is_a_file(tmp_path, capsys):
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    f = tmp_path / "out.txt"
    f.write_text("keep me")
    assert preprocess_main([str(src), str(f), "--preset", "tiny", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "not a folder" in err and "Traceback" not in err and err.count("\n") == 1
    assert f.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["in", "out.txt"]


def test_failed_preprocess_leaves_the_old_dataset_intact(tmp_path, capsys):
    src = make_folder(tmp_path / "in", corrupt=False)
    out = tmp_path / "out"
    m = preprocess(src, out, "tiny", progress=False)
    (out / "README.md").write_text("the user's own file, next to the dataset")
    before = snapshot(out)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(ValueError, match="all were skipped"):
        preprocess(bad, out, "small-16k", progress=False)
    assert snapshot(out) == before and load_manifest(out) == m and load_recipe(out) == TINY
    # a bad option is refused before anything is touched
    with pytest.raises(ValueError, match="val_fraction"):
        preprocess(src, out, "small-16k", progress=False, val_fraction=1.5)
    assert snapshot(out) == before
    # a successful re-run replaces the dataset and keeps the user's file
    m2 = preprocess(src, out, "small-16k", progress=False)
    assert load_recipe(out) == recipe_for("small-16k") and m2["preset"] == "small-16k"
    assert (out / "README.md").read_text().startswith("the user's own file")
    assert sorted(os.listdir(out)) == ["README.md", "manifest.json", "recipe.json", "train", "val"]


def test_disk_full_during_preprocess(tmp_path, monkeypatch, capsys):
    src = make_folder(tmp_path / "in", corrupt=False)
    out = tmp_path / "out"
    preprocess(src, out, "tiny", progress=False)
    before = snapshot(out)
    real, calls = np.savez, []

    def full(f, **arrays):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"PK partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, **arrays)

    monkeypatch.setattr(np, "savez", full)
    assert preprocess_main([str(src), str(out), "--preset", "tiny", "--quiet", "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err and err.count("\n") == 1
    assert snapshot(out) == before  # no .staging, no .tmp, the old dataset as it was
    # the same into a new folder: nothing is left behind at all
    calls.clear()
    assert preprocess_main([str(src), str(tmp_path / "new"), "--preset", "tiny", "--quiet"]) == 1
    assert not (tmp_path / "new").exists()


def test_dataset_files_respect_the_umask(tmp_path):
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    old = os.umask(0o022)
    try:
        preprocess(src, tmp_path / "a", "tiny", progress=False)
        os.umask(0o002)
        preprocess(src, tmp_path / "b", "tiny", progress=False)
    finally:
        os.umask(old)
    for folder, file_mode, dir_mode in ((tmp_path / "a", 0o644, 0o755),
                                        (tmp_path / "b", 0o664, 0o775)):
        for p in [folder, *folder.rglob("*")]:
            want = dir_mode if p.is_dir() else file_mode
            assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))


def test_preprocess_into_a_read_only_dataset(tmp_path, capsys):
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    out = tmp_path / "out"
    preprocess(src, out, "tiny", progress=False)
    before = snapshot(out)
    with read_only(out):
        assert preprocess_main([str(src), str(out), "--preset", "tiny", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert snapshot(out) == before


def test_data_builtin_refuses_a_foreign_folder(tmp_path, capsys):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    assert data_main(["builtin", str(foreign), "--preset", "tiny", "--limit", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "not a dmol dataset" in err and "Traceback" not in err and err.count("\n") == 1
    assert os.listdir(foreign) == ["thesis.tex"]  # no raw/, no LICENSE.txt
    f = tmp_path / "file"
    f.write_text("x")
    assert data_main(["builtin", str(f), "--preset", "tiny", "--limit", "2", "--quiet"]) == 1
    assert "not a folder" in capsys.readouterr().err and f.read_text() == "x"


# ---- what the manifest says about the inputs -----------------------------------------------
def test_unsupported_formats_are_listed_as_skipped(tmp_path, capsys):
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    (src / "song.mp3").write_bytes(b"ID3\x03\x00" + bytes(200))
    sf.write(src / "sub" / "clip.ogg", voiced(0.3, 16000, 200.0), 16000, format="OGG")
    m = preprocess(src, tmp_path / "out", "tiny", progress=False)
    skipped = {s["path"]: s["error"] for s in m["skipped"]}
    assert set(skipped) == {str(src / "song.mp3"), str(src / "sub" / "clip.ogg")}
    assert all("not supported" in e for e in skipped.values())
    err = capsys.readouterr().err
    assert "song.mp3" in err and "clip.ogg" in err
    assert "notes.txt" not in err  # not audio at all: not worth a word


def test_unicode_names_keep_a_mapping_to_their_source(tmp_path):
    src = tmp_path / "in"
    (src / "café").mkdir(parents=True)
    files = ["été.wav", "日本語.wav", "naïve.wav", "café/crème brûlée.flac", "a b.wav"]
    for i, name in enumerate(files):
        sf.write(src / name, voiced(0.3, 16000, 150.0 + 20 * i), 16000)
    m = preprocess(src, tmp_path / "out", "tiny", progress=False)
    names = m["train"] + m["val"]
    assert len(names) == len(set(names)) == len(files)
    assert not any(set(n) <= set("_-0123456789") for n in names)  # nothing collapsed to "_"
    assert sorted(m["sources"].values()) == sorted(files)
    assert set(m["sources"]) == set(names)
    for name, rel in m["sources"].items():  # each name leads back to its own file
        stored, _ = load_utterance(next((tmp_path / "out").glob(f"*/{name}.npz")))
        again, _ = corpus.prepare_audio(src / rel, TINY)
        np.testing.assert_array_equal(stored, again)


def test_upsampled_and_clipped_inputs_are_reported(tmp_path, capsys):
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    sf.write(src / "phone.wav", voiced(0.5, 8000, 180.0), 8000)
    hot = np.clip(voiced(0.5, 16000, 120.0) * 20, -1, 1)  # flat tops: clipped when recorded
    sf.write(src / "hot.wav", hot, 16000, subtype="PCM_16")
    m = preprocess(src, tmp_path / "out", "tiny", progress=False)
    err = capsys.readouterr().err
    assert "phone.wav" in err and "upsampled from 8000 Hz" in err
    assert "hot.wav" in err and "clipped" in err
    notes = {n["path"]: n["note"] for n in m["notes"]}
    assert set(notes) == {str(src / "phone.wav"), str(src / "hot.wav")}
    assert "upsampled from 8000 Hz" in notes[str(src / "phone.wav")]
    assert "clipped" in notes[str(src / "hot.wav")]


def test_other_warnings_while_preparing_are_passed_on_once(tmp_path, monkeypatch):
    import warnings

    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    real = corpus._prepare

    def noisy(*args):
        warnings.warn("something else", RuntimeWarning, stacklevel=1)
        return real(*args)

    monkeypatch.setattr(corpus, "_prepare", noisy)
    with pytest.warns(RuntimeWarning, match="something else") as rec:
        preprocess(src, tmp_path / "out", "tiny", progress=False)
    assert len([w for w in rec if w.category is RuntimeWarning]) == 4  # one per file


def test_float_input_above_full_scale_is_normalized_not_clipped(tmp_path):
    (tmp_path / "in").mkdir()
    x = voiced(0.5, 16000, 150.0) * 20  # peaks near 4
    assert np.abs(x).max() > 3.5
    sf.write(tmp_path / "in" / "loud.wav", x, 16000, subtype="FLOAT")
    preprocess(tmp_path / "in", tmp_path / "out", "tiny", progress=False, min_val=0, trim_db=None)
    audio, _ = load_utterance(list_split(tmp_path / "out", "train")[0])
    want = x[: len(audio)] * (corpus.PEAK / np.abs(x).max())
    np.testing.assert_allclose(audio, want, atol=1e-6)
    assert (np.abs(audio) >= corpus.PEAK - 1e-6).sum() <= 2  # one peak, no plateau


# ---- reading errors ------------------------------------------------------------------------
def test_reading_errors(tmp_path):
    with pytest.raises(ValueError, match="not a dmol dataset"):
        list_split(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_split(tmp_path / "nope", "train")
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    m = preprocess(src, tmp_path / "out", "tiny", progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        list_split(tmp_path / "out", "test")
    (tmp_path / "out" / "val" / f"{m['val'][0]}.npz").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        list_split(tmp_path / "out", "val")
    np.savez(tmp_path / "odd.npz", wav=np.zeros(3))
    with pytest.raises(ValueError, match="not a dmol utterance"):
        load_utterance(tmp_path / "odd.npz")
    np.savez(tmp_path / "mismatch.npz", audio=np.zeros(100, np.float32), mel=np.zeros((3, 20), "f"))
    with pytest.raises(ValueError, match="whole number of hops"):
        load_utterance(tmp_path / "mismatch.npz")


# ---- the built-in corpus -------------------------------------------------------------------
def test_builtin_is_real_decoded_speech_and_reused(tmp_path, capsys):
    # `make test` installs the Debian package (target `data`); fail loudly if it is missing
    assert HAVE_ASTERISK, "needs asterisk-core-sounds-en-g722 and G722: run `make data`"
    out = tmp_path / "allison"
    m = build_builtin(out, limit=4, progress=False)
    assert len(m["train"]) + len(m["val"]) == 4 and not m["skipped"]
    assert "CC-BY-SA-3.0" in m["license"] and "Allison Smith" in m["license"]
    assert (out / "LICENSE.txt").read_text() == m["license"]
    assert "CC-BY-SA-3.0" in capsys.readouterr().out
    assert len(list((out / "raw").rglob("*.wav"))) == 4
    for path in list_split(out, "train") + list_split(out, "val"):
        audio, mel = load_utterance(path)
        stats = speech_stats(audio, 16000)
        assert looks_like_speech(stats), (path.name, stats)
        load_recipe(out).validate_mel(mel)

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert build_builtin(out, limit=4, progress=False) == m
    assert "reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_builtin_falls_back_to_espeak(tmp_path, monkeypatch, capsys):
    assert shutil.which("espeak-ng"), "needs espeak-ng: run `make data`"
    monkeypatch.setattr(corpus, "_g722_available", lambda: False)
    m = build_builtin(tmp_path / "e", "tiny", limit=2, progress=False)
    assert "espeak-ng" in capsys.readouterr().out and "espeak-ng" in m["source"]
    assert (tmp_path / "e" / "LICENSE.txt").read_text() == m["license"]
    audio, _ = load_utterance(list_split(tmp_path / "e", "train")[0])
    assert looks_like_speech(speech_stats(audio, 16000))


def test_builtin_without_any_source_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "_g722_available", lambda: False)
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install asterisk-core-sounds-en-g722"):
        build_builtin(tmp_path / "none", limit=2, progress=False)


# ---- command line --------------------------------------------------------------------------
def test_cli(tmp_path, capsys):
    src = make_folder(tmp_path / "in", n=2)
    args = [str(src), str(tmp_path / "out"), "--preset", "tiny", "--seed", "1", "--quiet"]
    assert preprocess_main(args) == 0
    assert len(load_manifest(tmp_path / "out")["skipped"]) == 1
    assert preprocess_main([str(tmp_path / "nope"), str(tmp_path / "o2"), "--preset", "tiny"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert data_main(["builtin", str(tmp_path / "b"), "--preset", "nope"]) == 1
    assert "known presets" in capsys.readouterr().err


def test_preprocess_refuses_an_output_inside_its_input(tmp_path, capsys):
    """A dataset written inside the audio folder would be read as input next time."""
    src = make_folder(tmp_path / "in", n=2, corrupt=False)
    before = snapshot(src)
    assert preprocess_main([str(src), str(src / "data"), "--preset", "tiny", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "inside the input" in err and "Traceback" not in err and err.count("\n") == 1
    assert snapshot(src) == before
