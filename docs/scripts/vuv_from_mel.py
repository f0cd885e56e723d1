"""How much of the voicing (V/UV) column can a vocoder get from the mel alone?

A vocoder hears only the log-mel. This script trains a small classifier of WORLD's voicing
from the mel (harvest on each training prompt, as `dmol evaluate` tracks F0; an MLP on the
level-normalized log-mel of the frame and the 3 frames either side) and scores its decisions
the way `dmol evaluate` scores a vocoder's output: against harvest on the original, 5 ms
frames, the first 3 s of each prompt, the mean over prompts. A vocoder that rendered exactly
this classifier's voicing would score that V/UV error. It is an estimate of what the mel
tells, not a bound (a better classifier may do better), but where it fails, the mel looks
voiced (or not) and the recording says otherwise.

    python docs/scripts/vuv_from_mel.py data/ [/usr/share/asterisk/sounds/fr_CA_f_June ...]

Prints the classifier's V/UV error (by direction) on the first 8 and all 28 held-out prompts,
per prompt for the first 8, and on each audio folder given (its first 28 files).
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from dmol.audio.corpus import list_split, load_recipe, load_utterance
from dmol.audio.metrics import f0_track
from dmol.wavenet.evaluate import audio_utterances

CONTEXT = 3  # mel frames either side
SECONDS = 3.0  # as the model card's protocol (dmol evaluate --max-seconds 3)


def features(mel: np.ndarray) -> np.ndarray:
    """(F, n_mels) -> (F, (2 CONTEXT + 1) n_mels): each frame and its neighbours, in dB-like
    units relative to the prompt's loudest bin (the level of a prompt is arbitrary)."""
    m = mel - mel.max()
    p = np.pad(m, ((CONTEXT, CONTEXT), (0, 0)), mode="edge")
    return np.concatenate([p[i:i + len(m)] for i in range(2 * CONTEXT + 1)], 1)


def harvest_frames(audio: np.ndarray, sr: int, hop: int, frames: int) -> tuple:
    """Harvest's voicing every 5 ms and the mel frame each 5 ms frame falls in."""
    f0, t = f0_track(audio.astype(np.float64), sr)
    return f0 > 0, np.minimum((t * sr / hop).astype(int), frames - 1)


def _label(item: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A training prompt's features and, per mel frame, the share of harvest's frames voiced."""
    audio, mel, sr, hop = item
    v, j = harvest_frames(audio, sr, hop, len(mel))
    share = np.bincount(j, v, len(mel)) / np.maximum(np.bincount(j, None, len(mel)), 1)
    return features(mel), share


def train(data: str, recipe) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    items = [(*load_utterance(p), recipe.sample_rate, recipe.hop_length)
             for p in list_split(data, "train")]
    with ProcessPoolExecutor(2) as ex:
        labelled = list(ex.map(_label, items, chunksize=8))
    x = torch.from_numpy(np.concatenate([f for f, _ in labelled])).float()
    y = torch.from_numpy(np.concatenate([s for _, s in labelled]) > 0.5).float()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    xs = (x - mu) / sd
    for _ in range(30):  # epochs of minibatches of 256
        for idx in torch.randperm(len(xs)).split(256):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xs[idx])[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    print(f"trained on {len(y)} frames of {len(items)} prompts ({y.mean():.1%} voiced)")
    return net.eval(), mu, sd


def score(utts, recipe, net, mu, sd) -> list[tuple[str, float, float, float]]:
    """Per prompt: (name, V/UV error, voiced -> unvoiced, unvoiced -> voiced) of the
    classifier's decisions against harvest on the original, as dmol evaluate counts them."""
    sr, hop = recipe.sample_rate, recipe.hop_length
    rows = []
    for name, audio, mel in utts:
        frames = min(len(mel), int(SECONDS * sr) // hop)
        ref, j = harvest_frames(audio[:frames * hop], sr, hop, frames)
        with torch.no_grad():
            x = (torch.from_numpy(features(mel)[:frames]).float() - mu) / sd
            said = (net(x)[:, 0] > 0).numpy()[j]
        rows.append((name, float(np.mean(ref != said)), float(np.mean(ref & ~said)),
                     float(np.mean(~ref & said))))
    return rows


def main(data: str, *folders: str) -> None:
    recipe = load_recipe(data)
    net, mu, sd = train(data, recipe)
    held = [(p.stem, *load_utterance(p)) for p in list_split(data, "val")]
    rows = score(held, recipe, net, mu, sd)
    for label, part in (("held-out, first 8", rows[:8]), ("held-out, all", rows)):
        e = np.array([r[1:] for r in part]).mean(0)
        print(f"{label} ({len(part)} prompts): V/UV {e[0]:.4f} (V->UV {e[1]:.4f}, "
              f"UV->V {e[2]:.4f})")
    for name, e, *_ in rows[:8]:
        print(f"  {name:28s} {e:.3f}")
    for folder in folders:
        part = score(audio_utterances([folder], recipe, 28), recipe, net, mu, sd)
        e = np.array([r[1:] for r in part]).mean(0)
        print(f"{folder} ({len(part)} files): V/UV {e[0]:.4f} (V->UV {e[1]:.4f}, "
              f"UV->V {e[2]:.4f})")


if __name__ == "__main__":
    main(*sys.argv[1:])
