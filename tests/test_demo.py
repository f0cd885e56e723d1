"""`dmol demo` end to end on a tiny budget: corpus, the pretrained model, a tiny training run,
unseen voices, vocoding, report, offline page."""

import contextlib
import io
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf
import torch

from dmol.audio.corpus import load_utterance
from dmol.cli import demo as demo_module
from dmol.cli.demo import main
from dmol.wavenet.checkpoint import PRETRAINED, list_checkpoints
from dmol.wavenet.demo import _train_or_reuse, pick_utterances, unseen_voice_files

# the training run stops at max_steps (TRAIN_STEPS), never at the time budget: what it
# learns does not depend on the machine's load
ARGS = ["--preset", "tiny", "--train-minutes", "5", "--utterances", "1", "--limit", "4",
        "--max-seconds", "0.5", "--unseen", "2", "--seeds", "2"]
TRAIN_STEPS = 12


def _run(out) -> tuple[int, str]:
    real = demo_module.run_demo

    def run_demo(*args, **kwargs):
        return real(*args, **kwargs, overrides={"max_steps": TRAIN_STEPS})

    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr(demo_module, "run_demo", run_demo)
        rc = main([*ARGS, "--out", str(out)])
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    threads = torch.get_num_threads()
    rc, printed = _run(out)
    assert rc == 0, printed
    assert torch.get_num_threads() == threads  # --threads 1 applied to the run only
    first = {p.name: p.stat().st_mtime_ns for p in list_checkpoints(out / "run")}
    rc2, printed2 = _run(out)
    assert rc2 == 0, printed2
    return out, printed, printed2, first


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_first_run_writes_everything(demo):
    out, printed, _, _ = demo
    for i in range(1, 7):
        assert f"[{i}/6]" in printed
    assert "(1 CPU thread(s))" in printed and "lp-16k-ltp.pt (lp-16k-ltp" in printed
    assert "training preset 'tiny' from scratch" in printed
    steps = [int(p.stem.split("_")[1]) for p in list_checkpoints(out / "run")]
    assert max(steps) == TRAIN_STEPS  # it stopped at max_steps, not at the time budget
    assert re.search(r"total wall time .* \(\d+ s\)", printed)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["systems"]) == {"WaveNet", "Griffin-Lim"}
    assert metrics["table"] in printed  # the table with both systems was printed
    # two seeds per prompt: their mean, with its standard error in the table and the JSON
    assert metrics["settings"]["seeds"] == 2 and "mean of seeds 0-1" in metrics["table"]
    assert set(metrics["standard_error"]["WaveNet"]) >= {"f0_rmse_hz", "vuv_error"}
    assert "the mean of seeds 0-1" in (out / "index.html").read_text()
    assert metrics["demo"]["trained"]["preset"] == "tiny"
    assert set(metrics["demo"]["trained"]["systems"]) == {"WaveNet"}
    assert set(metrics["unseen"]) == {"June (fr-CA, female)", "Carlo (it-IT, male)"}
    for res in metrics["unseen"].values():
        assert set(res["systems"]) == {"WaveNet", "Griffin-Lim"}
        assert np.isfinite(res["systems"]["WaveNet"]["mcd_db"])
        # two prompts: the paired comparison, in the JSON, the printed table and the page
        assert res["difference"]["mcd_db"]["n"] == 2
        assert res["table"] in printed and "utterance by utterance (2 utterances" in res["table"]
    assert "difference" not in metrics  # one held-out prompt: nothing to pair
    (utt,) = metrics["utterances"]
    names = [f"{utt['name']}_{s}.wav" for s in ("original", "wavenet", "griffinlim")]
    assert sorted(utt["wavs"].values()) == sorted(names)
    lengths = set()
    for name in names:
        audio, sr = sf.read(str(out / name), dtype="float32")
        assert sr == 16000 and np.isfinite(audio).all() and np.abs(audio).max() > 0
        lengths.add(len(audio))
    assert lengths == {round(utt["seconds"] * 16000)} and utt["seconds"] <= 0.5
    ref, _ = load_utterance(out / "data" / "val" / f"{utt['name']}.npz")
    orig, _ = sf.read(str(out / names[0]), dtype="float32")
    np.testing.assert_allclose(orig, ref[: len(orig)], atol=1 / 32768 + 1e-6)
    from matplotlib.image import imread

    for png in ("report.png", "inspect.png"):
        img = imread(out / png)
        assert img.shape[0] > 500 and img[..., :3].std() > 0.05


def test_index_html_is_offline_and_complete(demo):
    out = demo[0]
    page = (out / "index.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "the page links nothing"
    for ref in parser.refs:
        assert "://" not in ref and not ref.startswith("/"), ref  # relative paths only
        assert (out / ref).is_file(), f"index.html references missing {ref}"
    assert not {"script", "link", "iframe"} & set(parser.tags)
    # held-out: original, pretrained, Griffin-Lim, the tiny run; each unseen voice: two
    # prompts of three
    assert parser.tags.count("audio") == 4 + 2 * 3 + 2 * 3
    assert page.count("utterance by utterance (2 utterances") == 2
    assert page.count("counting gaps of more than 2 standard errors") == 2
    assert {"report.png", "inspect.png", "metrics.json"} <= set(parser.refs)
    assert "CC-BY-SA-3.0" in page and "Allison Smith" in page and "Digium" in page
    assert "June Wallack" in page and "Carlo Flora" in page
    assert "WaveNet" in page and "Griffin-Lim" in page and "5-min run" in page


def test_second_run_reuses_the_model(demo):
    out, _, printed2, first = demo
    assert "reached max_steps, skipping training" in printed2 and "from scratch" not in printed2
    assert "resuming" not in printed2
    assert "reusing the complete built-in corpus" in printed2
    # held-out (pretrained and the tiny run) and two unseen voices: nothing vocoded again
    assert printed2.count("reusing the vocoded utterances") == 4
    # the checkpoints are the very same files: nothing was trained or rewritten
    assert {p.name: p.stat().st_mtime_ns for p in list_checkpoints(out / "run")} == first


def test_resume_or_skip_decision(tmp_path, monkeypatch):
    import sys

    import dmol.wavenet.train  # noqa: F401 - the module, whatever dmol.wavenet exports

    calls, saved = [], {}
    monkeypatch.setattr(sys.modules["dmol.wavenet.train"], "train",
                        lambda *a, **k: calls.append(k))
    monkeypatch.setattr(sys.modules["dmol.wavenet.checkpoint"], "latest_checkpoint",
                        lambda d: d / "ckpt_00000010.pt")
    monkeypatch.setattr(sys.modules["dmol.wavenet.checkpoint"], "load_checkpoint",
                        lambda p: saved)
    run = tmp_path / "run"
    run.mkdir()

    def decide(seconds, max_steps=200, preset="tiny"):
        saved.clear()
        saved.update(preset=preset, step=10, train_config={"max_steps": max_steps},
                     metrics={"train_seconds": seconds})
        calls.clear()
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            _train_or_reuse(tmp_path, run, "tiny", 2.0, None)
        return calls, buf.getvalue()

    c, text = decide(30.0)  # a quarter of the budget used: resume for the rest
    assert len(c) == 1 and c[0]["resume"] and c[0]["minutes"] == pytest.approx(1.5)
    assert "resuming" in text
    c, text = decide(121.0)
    assert c == [] and "budget is used up, skipping training" in text
    c, text = decide(10.0, max_steps=10)  # reached max_steps: nothing left to train
    assert c == [] and "max_steps, skipping training" in text
    with pytest.raises(ValueError, match="preset 'small-16k'"):
        decide(10.0, preset="small-16k")


def test_pick_utterances_prefers_long_ones_that_fit(tmp_path):
    paths = []
    for name, seconds in (("a", 0.3), ("b", 1.5), ("c", 3.0), ("d", 1.9), ("e", 2.5)):
        p = tmp_path / f"{name}.npz"
        n = int(seconds * 16000) // 64 * 64
        np.savez(p, audio=np.zeros(n, np.float32), mel=np.zeros((n // 64, 20), np.float32))
        paths.append(p)
    names = [p.stem for p in pick_utterances(paths, 4, 2.0, 16000)]
    assert names == ["d", "b", "e", "c"]  # fitting, longest first; then the shortest too-long
    assert [p.stem for p in pick_utterances(paths, 9, 2.0, 16000)][-1] == "a"  # too short: last
    with pytest.raises(ValueError, match="validation"):
        pick_utterances([], 1, 2.0, 16000)


def test_unseen_voice_files_are_speech_that_fills_the_crop(tmp_path):
    """Spread over the sorted prompts that fill at least 60% of the crop and last at most 3 s
    (G.722: 8000 bytes per second), never the package's tones and beeps."""
    sizes = {"a": 6000, "b": 7000, "beep": 7000, "c": 100, "confbridge-join": 6500,
             "d": 7500, "e": 30000, "f": 6800, "tt-monkeys": 7000, "g": 0}  # bytes
    for name, size in sizes.items():
        (tmp_path / f"{name}.g722").write_bytes(b"\0" * size)
    assert [p.stem for p in unseen_voice_files(tmp_path, 4, 1.0)] == ["a", "b", "d", "f"]
    assert [p.stem for p in unseen_voice_files(tmp_path, 2, 1.0)] == ["a", "d"]
    # none fills 60% of a 10 s crop: every speech prompt with audio is a candidate
    assert [p.stem for p in unseen_voice_files(tmp_path, 9, 10.0)] == ["a", "b", "c", "d", "e",
                                                                       "f"]


def test_bad_arguments(tmp_path, capsys):
    assert main(["--preset", "nope", "--out", str(tmp_path / "x")]) == 1
    assert "unknown mel preset" in capsys.readouterr().err
    assert main(["--train-minutes", "0", "--out", str(tmp_path / "x")]) == 1
    assert "train_minutes" in capsys.readouterr().err
    assert main(["--scale-temperature", "nan", "--out", str(tmp_path / "x")]) == 1
    assert "scale_temperature" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 1
    assert "no such model" in capsys.readouterr().err
    assert main(["--seeds", "0", "--out", str(tmp_path / "x")]) == 1
    assert "seeds must be an integer >= 1" in capsys.readouterr().err
    inside = tmp_path / "d" / "run"  # the demo trains into OUT/run, rotating checkpoints
    inside.mkdir(parents=True)
    model = inside / "lp-16k-ltp.pt"
    shutil.copy(PRETRAINED, model)
    assert main(["--model", str(model), "--out", str(tmp_path / "d")]) == 1
    assert "lies inside --out" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "d").rglob("*")) == ["lp-16k-ltp.pt", "run"]
    assert not (tmp_path / "x").exists()
