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


def test_seed_means_skip_a_seed_without_a_value(monkeypatch):
    """The WaveNet's figure is the mean over seeds of each seed's mean over the utterances; a
    seed with no defined value (F0 with no jointly voiced frame) drops out of both."""
    import dmol.wavenet.evaluate as ev

    nan = math.nan  # (utterance, seed) -> F0 RMSE; seed 3 has no value anywhere
    f0 = {(0, 0): 10.0, (0, 1): nan, (0, 2): 30.0, (0, 3): nan,
          (1, 0): 20.0, (1, 1): 60.0, (1, 2): 50.0, (1, 3): nan}
    calls = iter(range(2))
    zeros = dict.fromkeys(evaluate_pair(np.ones(800), np.ones(800), 16000, f0_method="dio"), 0.0)

    def fake_pairs(ref, gens, sr, f0_method):
        i = next(calls)
        rows = [{**zeros, "mcd_db": float(i + k), "f0_rmse_hz": f0[i, k]} for k in range(4)]
        return rows + [{**zeros, "mcd_db": 9.0, "f0_rmse_hz": 1.0}]  # Griffin-Lim last

    monkeypatch.setattr(ev, "evaluate_pairs", fake_pairs)
    model, head, recipe = _untrained()
    utts = [(f"u{i}", *_tone(recipe, 0.1)) for i in range(2)]
    r = ev.evaluate_model(model, head, recipe, utts, seeds=4, gl_iters=1, f0_method="dio",
                          progress=False)
    seed_means = [15.0, 60.0, 40.0]  # seed 3 drops out; the mean over utterances first would
    # give (20 + 43.3) / 2 = 31.7 instead
    assert r["systems"]["WaveNet"]["f0_rmse_hz"] == pytest.approx(np.mean(seed_means))
    se = np.std(seed_means, ddof=1) / math.sqrt(3)
    assert r["standard_error"]["WaveNet"]["f0_rmse_hz"] == pytest.approx(se)
    assert r["systems"]["WaveNet"]["mcd_db"] == pytest.approx(2.0)  # seeds 0.5 .. 3.5
    assert r["utterances"][0]["WaveNet"]["f0_rmse_hz"] == pytest.approx(20.0)
    assert r["systems"]["Griffin-Lim"] == {**zeros, "mcd_db": 9.0, "f0_rmse_hz": 1.0}
    assert f"F0 RMSE {se:.3} Hz" in r["table"] and "mean of seeds 0-3" in r["table"]


def test_paired_difference_is_per_utterance_and_says_which_gaps_are_measured(monkeypatch):
    """WaveNet - Griffin-Lim utterance by utterance (the WaveNet's mean over its seeds), its
    standard error over the utterances; an undefined value drops that utterance only."""
    import dmol.wavenet.evaluate as ev

    nan = math.nan
    zeros = dict.fromkeys(evaluate_pair(np.ones(800), np.ones(800), 16000, f0_method="dio"), 0.0)
    # per utterance: (WaveNet seed 0, seed 1, Griffin-Lim) for MCD, F0 and V/UV
    mcd = [(4.0, 5.0, 8.0), (3.0, 3.0, 7.0), (6.0, 4.0, 9.0)]
    f0 = [(10.0, 20.0, 30.0), (nan, nan, 12.0), (20.0, 20.0, 14.0)]
    vuv = [(0.02, 0.04, 0.03), (0.05, 0.05, 0.04), (0.01, 0.03, 0.03)]
    calls = iter(range(3))

    def fake_pairs(ref, gens, sr, f0_method):
        i = next(calls)
        return [{**zeros, "mcd_db": mcd[i][k], "f0_rmse_hz": f0[i][k], "vuv_error": vuv[i][k]}
                for k in range(3)]

    monkeypatch.setattr(ev, "evaluate_pairs", fake_pairs)
    model, head, recipe = _untrained()
    utts = [(f"u{i}", *_tone(recipe, 0.1)) for i in range(3)]
    r = ev.evaluate_model(model, head, recipe, utts, seeds=2, gl_iters=1, f0_method="dio",
                          progress=False)
    d = r["difference"]
    by_hand = {"mcd_db": [4.5 - 8, 3 - 7, 5 - 9], "f0_rmse_hz": [15 - 30, 20 - 14],
               "vuv_error": [0.03 - 0.03, 0.05 - 0.04, 0.02 - 0.03]}
    for m, diffs in by_hand.items():
        assert d[m]["n"] == len(diffs)
        assert d[m]["mean"] == pytest.approx(np.mean(diffs))
        assert d[m]["se"] == pytest.approx(np.std(diffs, ddof=1) / math.sqrt(len(diffs)))
    assert d["mrstft"]["mean"] == 0.0 and d["mrstft"]["n"] == 3
    # MCD: -3.83 +- 0.17, better; F0: -3 +- 9 and V/UV, MR-STFT: within 2 SE (or none)
    assert "MCD -3.83 ± 0.17 dB" in r["table"] and "(3 utterances;" in r["table"]
    assert ("counting gaps of more than 2 standard errors: better on MCD; not separable on "
            "log-mel L1, MR-STFT, F0 RMSE, V/UV") in r["table"]
    worse = ev.paired_text({m: {"mean": 1.0, "se": 0.1, "n": 5} for m in ev.PAIRED})
    assert "worse on MCD, log-mel L1, MR-STFT, F0 RMSE, V/UV" in worse
    assert ev.paired_difference(r["utterances"][:1]) is None  # one utterance: nothing to pair
    assert ev.paired_difference(r["utterances"], b="nobody") is None


def test_cli_rejects_bad_seeds(tmp_path, capsys):
    for argv, msg in ((["--seeds", "0"], "--seeds must be >= 1"),
                      (["--seeds", "2", "--no-synth"], "--seeds needs synthesis")):
        with pytest.raises(SystemExit):
            main(["pretrained", str(tmp_path), *argv])
        assert msg in capsys.readouterr().err
    model, head, recipe = _untrained()
    with pytest.raises(ValueError, match="needs synth=True"):
        evaluate_model(model, head, recipe, [("a", *_tone(recipe, 0.1))], synth=False, seeds=2,
                       progress=False)


def test_cli_never_writes_over_its_inputs(trained, tmp_path, capsys):
    """--json and --wav-dir may not overwrite the dataset, an audio input or the checkpoint,
    nor put WAVs among the inputs; refused before anything loads, the inputs unchanged."""
    data, run = trained / "data", trained / "run"
    ckpt = sorted(run.glob("ckpt_*.pt"))[-1]
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    audio, _ = load_utterance(list_split(data, "val")[0])
    import soundfile as sf

    sf.write(wavs / "a.wav", audio, 16000)
    before = {p: p.read_bytes() for p in [data / "manifest.json", ckpt, wavs / "a.wav"]}
    cases = [
        ([str(run), str(data), "--json", str(data / "manifest.json")], "--json"),
        ([str(ckpt), str(data), "--json", str(ckpt)], "--json"),
        ([str(run), str(wavs / "a.wav"), "--json", str(wavs / "a.wav")], "--json"),
        ([str(run), str(data), "--wav-dir", str(data / "out")], "--wav-dir"),
        ([str(run), str(wavs), "--wav-dir", str(wavs)], "--wav-dir"),
        ([str(run), str(wavs / "a.wav"), "--wav-dir", str(wavs)], "--wav-dir"),
    ]
    for argv, flag in cases:
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert flag in err and ("input" in err), err
    assert {p: p.read_bytes() for p in before} == before
    assert not (data / "out").exists()
