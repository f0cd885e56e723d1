"""`dmol evaluate`: copy-synthesis metrics of a just-trained tiny WaveNet vs Griffin-Lim."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from dmol.audio.corpus import build_builtin, list_split, load_utterance
from dmol.audio.features import recipe_for
from dmol.audio.metrics import bits_per_sample, evaluate_pair
from dmol.cli.evaluate import main
from dmol.wavenet.evaluate import evaluate_model, log_metrics, write_json
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import get_preset

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dmol.wavenet.train import train

    root = tmp_path_factory.mktemp("evaluate")
    build_builtin(root / "data", "tiny", limit=4, progress=False)
    train(root / "data", root / "run", "tiny", max_steps=3, progress=False, tensorboard=False)
    return root


def _untrained():
    torch.manual_seed(0)
    model = WaveNet(get_preset("tiny")[0]).eval()
    return model, model.head, recipe_for("tiny")


def _tone(recipe, seconds):
    t = np.arange(int(seconds * recipe.sample_rate) // recipe.hop_length * recipe.hop_length)
    audio = (0.5 * np.sin(2 * np.pi * 220 * t / recipe.sample_rate)).astype(np.float32)
    return audio, recipe.compute(audio)


def test_cli_table_has_both_systems_with_finite_numbers(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main([str(trained / "run"), str(trained / "data"), "--max-utterances", "1",
               "--max-seconds", "0.3", "--f0-method", "dio", "--json", str(out),
               "--wav-dir", str(tmp_path / "wavs")])
    printed = capsys.readouterr().out
    assert rc == 0
    lines = printed.splitlines()
    header = re.split(r"\s{2,}", next(ln for ln in lines if ln.startswith("system ")))
    rows = {cells[0]: dict(zip(header, cells, strict=True)) for ln in lines
            if (cells := re.split(r"\s{2,}", ln))[0] in ("WaveNet", "Griffin-Lim")}
    assert set(rows) == {"WaveNet", "Griffin-Lim"}
    result = json.loads(out.read_text())  # strict JSON: NaN would have been written as null
    systems = result["systems"]
    for system in ("WaveNet", "Griffin-Lim"):
        for key, col in (("mcd_db", "MCD [dB]"), ("log_mel_l1", "log-mel L1 [Np]"),
                         ("mrstft", "MR-STFT"), ("vuv_error", "V/UV error [frac]")):
            value = systems[system][key]
            assert math.isfinite(value) and value >= 0
            assert float(rows[system][col]) == pytest.approx(value, abs=0.01)
    assert float(rows["WaveNet"]["NLL [bit/sample]"]) == pytest.approx(
        systems["WaveNet"]["bits_per_sample"], abs=0.001)
    assert rows["Griffin-Lim"]["NLL [bit/sample]"] == "-"
    bits = systems["WaveNet"]["bits_per_sample"]
    assert math.isfinite(bits) and bits > 0
    assert "bits_per_sample" not in systems["Griffin-Lim"]
    utt = result["utterances"][0]
    assert utt["seconds"] <= 0.3
    # the written WAVs are the evaluated audio: the original matches the dataset's samples
    import soundfile as sf

    name = utt["name"]
    audio, _ = load_utterance(trained / "data" / "val" / f"{name}.npz")
    ref, sr = sf.read(str(tmp_path / "wavs" / f"{name}_original.wav"), dtype="float32")
    assert sr == 16000 and len(ref) == round(utt["seconds"] * sr)
    np.testing.assert_array_equal(ref, audio[: len(ref)])
    for system, key in (("wavenet", "WaveNet"), ("griffinlim", "Griffin-Lim")):
        gen, _ = sf.read(str(tmp_path / "wavs" / f"{name}_{system}.wav"), dtype="float32")
        assert len(gen) == len(ref) and np.abs(gen).max() > 0
        # ... and the generated files are the scored samples: the metrics recompute exactly
        again = evaluate_pair(ref, gen, sr, f0_method="dio")
        for metric, value in utt[key].items():
            if value is None:  # NaN (no jointly voiced frame) is written as null
                assert math.isnan(again[metric]), metric
            else:
                assert again[metric] == pytest.approx(value, rel=1e-9, abs=1e-12), metric


def test_cli_rejects_data_made_with_another_recipe(trained, tmp_path, capsys):
    other = tmp_path / "data40"
    shutil.copytree(trained / "data", other)
    recipe = json.loads((other / "recipe.json").read_text())
    (other / "recipe.json").write_text(json.dumps({**recipe, "n_mels": 40}))
    rc = main([str(trained / "run"), str(other), "--no-synth"])
    assert rc == 1
    assert "mel recipe" in capsys.readouterr().err


def test_nll_only_and_cropping(tmp_path):
    model, head, recipe = _untrained()
    audio, mel = _tone(recipe, 0.5)
    r = evaluate_model(model, head, recipe, [("tone", audio, mel)], synth=False,
                       max_seconds=0.1, f0_method="dio", progress=False)
    utt = r["utterances"][0]
    frames = int(0.1 * recipe.sample_rate) // recipe.hop_length
    assert utt["seconds"] == frames * recipe.hop_length / recipe.sample_rate
    assert list(r["systems"]) == ["WaveNet", "Griffin-Lim"]
    assert list(r["systems"]["WaveNet"]) == ["bits_per_sample"]
    # the NLL is that of the cropped audio, teacher-forced, in bits
    x = torch.from_numpy(audio[: frames * recipe.hop_length])[None]
    c = torch.from_numpy(mel[:frames].T.copy())[None]
    with torch.no_grad():
        nats = float(head.nll(model(x, c), x).double().mean())
    assert r["systems"]["WaveNet"]["bits_per_sample"] == pytest.approx(bits_per_sample(nats))
    assert "WaveNet" in r["table"] and "Griffin-Lim" in r["table"]


def test_means_skip_undefined_values_and_json_is_strict(tmp_path):
    model, head, recipe = _untrained()
    utts = [(f"u{i}", *_tone(recipe, 0.2)) for i in range(2)]
    r = evaluate_model(model, head, recipe, utts, synth=False, f0_method="dio", progress=False)
    gl = [u["Griffin-Lim"] for u in r["utterances"]]
    for key in gl[0]:
        vals = [g[key] for g in gl if math.isfinite(g[key])]
        expect = np.mean(vals) if vals else math.nan
        np.testing.assert_allclose(r["systems"]["Griffin-Lim"][key], expect)
    r["systems"]["Griffin-Lim"]["f0_rmse_hz"] = math.nan
    path = write_json(tmp_path / "r.json", r, extra={"x": np.float32(1.5)})
    back = json.loads(path.read_text())
    assert back["systems"]["Griffin-Lim"]["f0_rmse_hz"] is None and back["extra"]["x"] == 1.5


def test_log_metrics_writes_finite_scalars():
    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[tag] = (value, step)

    w = Writer()
    log_metrics(w, 7, {"systems": {"WaveNet": {"mcd_db": 5.0, "f0_rmse_hz": math.nan},
                                   "Griffin-Lim": {"mcd_db": 9.0}}})
    assert w.scalars == {"eval/wavenet/mcd_db": (5.0, 7), "eval/griffinlim/mcd_db": (9.0, 7)}


def test_bad_input():
    model, head, recipe = _untrained()
    audio, mel = _tone(recipe, 0.1)
    with pytest.raises(ValueError, match="no utterances"):
        evaluate_model(model, head, recipe, [], progress=False)
    with pytest.raises(TypeError, match="sequence"):
        evaluate_model(model, head, recipe, "a.npz", progress=False)
    with pytest.raises(TypeError, match="utterance 0"):
        evaluate_model(model, head, recipe, [audio], synth=False, progress=False)
    with pytest.raises(ValueError, match="max_seconds"):
        evaluate_model(model, head, recipe, [("a", audio, mel)], max_seconds=0, progress=False)
    with pytest.raises(ValueError, match="hop_length"):
        evaluate_model(model, head, recipe_for("small-16k"), [("a", audio, mel)], progress=False)
    with pytest.raises(ValueError, match="mel bins"):
        evaluate_model(model, head, recipe, [("a", audio, mel[:, :10])], synth=False,
                       progress=False)


def test_val_split_paths_are_accepted(trained):
    model, head, recipe = _untrained()
    paths = list_split(trained / "data", "val")
    r = evaluate_model(model, head, recipe, paths, synth=False, baseline=False,
                       max_seconds=0.05, progress=False)
    assert [u["name"] for u in r["utterances"]] == [p.stem for p in paths]
    assert list(r["systems"]) == ["WaveNet"]


def test_seeds_equal_separate_runs_and_give_their_standard_error():
    model, head, recipe = _untrained()
    utts = [(f"u{i}", *_tone(recipe, 0.25)) for i in range(2)]
    kw = dict(max_seconds=None, f0_method="dio", progress=False)
    both = evaluate_model(model, head, recipe, utts, seed=5, seeds=2, **kw)
    runs = [evaluate_model(model, head, recipe, utts, seed=s, **kw) for s in (5, 6)]
    for k, run in enumerate(runs):  # utterance i of run k: seed 5 + k + i, as in a separate run
        for u, r in zip(both["utterances"], run["utterances"], strict=True):
            assert u["WaveNet_by_seed"][k] == r["WaveNet"]
            assert u["Griffin-Lim"] == r["Griffin-Lim"]
    for m, v in both["systems"]["WaveNet"].items():
        a, b = (r["systems"]["WaveNet"][m] for r in runs)
        np.testing.assert_allclose(v, (a + b) / 2, rtol=1e-12)
        if m != "bits_per_sample":
            np.testing.assert_allclose(both["standard_error"]["WaveNet"][m], abs(a - b) / 2,
                                       rtol=1e-12)
    assert runs[0]["systems"]["WaveNet"]["mcd_db"] != runs[1]["systems"]["WaveNet"]["mcd_db"]
    assert both["systems"]["Griffin-Lim"] == runs[0]["systems"]["Griffin-Lim"]
    assert both["settings"]["seeds"] == 2 and "standard error" in both["table"]
    assert "standard_error" not in runs[0] and "WaveNet_by_seed" not in runs[0]["utterances"][0]
    with pytest.raises(ValueError, match="seeds"):
        evaluate_model(model, head, recipe, utts, seeds=0, **kw)


def test_cli_rejects_zero_seeds(trained, capsys):
    with pytest.raises(SystemExit):
        main([str(trained / "run"), str(trained / "data"), "--seeds", "0"])
    assert "--seeds must be >= 1" in capsys.readouterr().err
