"""Voicing-dependent sampling and post-filtering (session 20; none kept).

Per mel frame, a voiced / unvoiced decision (the bundle's learned estimate: p_voiced > 0.5,
or with `--level D` the frame's mel energy within D dB of the prompt's loudest) chooses the
scale temperature of the logistic noise (`--st-voiced`, `--st-unvoiced`; iLPCNet and GlotNet
sample voiced and unvoiced frames with different temperatures), and `--gate` turns the pitch
post-filter off in unvoiced frames. Everything else is the demo's protocol before session 20:
its 8 held-out prompts and 4 of June's and Carlo's, 3 s each, folded mode, the command-line
post-filters, `--seeds N` seeds per prompt. The noise is drawn as without the variant (same
uniforms, only scaled), so the variants are paired with the plain run of the same seeds.

The hooks wrap `dmol.wavenet.synthesis.run_rows` (the noise of each engine call),
`synthesize_folded` (the per-frame decisions of the utterance) and the pitch post-filter's
per-frame choice: a measurement, not a feature.

    python docs/scripts/voicing_sampling_trial.py pretrained data/ out.json --seeds 4 \
        --st-unvoiced 2.0 --gate
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

import dmol.wavenet.synthesis as synthesis
from dmol.audio.corpus import list_split
from dmol.audio.postfilter import PitchPostfilter
from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.demo import UNSEEN_VOICES, pick_utterances, unseen_voice_files
from dmol.wavenet.evaluate import audio_utterances, evaluate_model

STATE: dict = {"voiced": None, "flags": collections.deque(), "hop": 256}


def install(a: argparse.Namespace) -> None:
    """Wrap the three places the variant changes (module attributes, looked up per call)."""
    choose, rows, folded = (PitchPostfilter._choose, synthesis.run_rows,
                            synthesis.synthesize_folded)

    def gated_choose(self, x, s, period):  # one call per frame, in order
        lag, g = choose(self, x, s, period)
        voiced = STATE["flags"].popleft() if STATE["flags"] else True
        return lag, (g if voiced or not a.gate else 0.0)

    def scaled_rows(engine, state, steps, n, inputs, *, generator, temperature,
                    scale_temperature, done=None):
        starts, draw, at = inputs.__defaults__[0], engine.draw_noise, [0]

        def draw_scaled(k, b, **kw):
            noise = draw(k, b, **kw)
            t = starts[:, None] + torch.arange(at[0], at[0] + k)[None]  # (rows, k) samples
            v = STATE["voiced"][(t // STATE["hop"]).clamp(max=len(STATE["voiced"]) - 1)]
            st = torch.where(v, a.st_voiced, a.st_unvoiced) / scale_temperature
            noise.logistic = noise.logistic * st.T.to(noise.logistic)
            at[0] += k
            return noise

        engine.draw_noise = draw_scaled
        try:
            return rows(engine, state, steps, n, inputs, generator=generator,
                        temperature=temperature, scale_temperature=scale_temperature, done=done)
        finally:
            del engine.draw_noise

    def decided_folded(model, mel, **kw):
        m = synthesis._as_frames(model, mel).double()
        if a.level:
            db = 10 * torch.log10(torch.exp(2 * m).sum(-1))
            voiced = db > db.max() - a.level
        else:
            voiced = model.pitch_net.estimate(m)[1] > model.cfg.pitch_net_voicing
        STATE.update(voiced=voiced, flags=collections.deque(voiced.tolist()),
                     hop=model.hop_length)
        return folded(model, mel, **kw)

    PitchPostfilter._choose = gated_choose
    synthesis.run_rows = scaled_rows
    synthesis.synthesize_folded = decided_folded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("data")
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--st-voiced", type=float, default=1.0)
    p.add_argument("--st-unvoiced", type=float, default=1.0)
    p.add_argument("--gate", action="store_true")
    p.add_argument("--level", type=float, default=0.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    install(a)
    model, head, recipe, _ = load_model(a.checkpoint)
    sets = {"held-out": pick_utterances(list_split(a.data, "val"), 8, 3.0, recipe.sample_rate)}
    for voice, (folder, _) in UNSEEN_VOICES.items():
        tag = voice.split()[0].lower()
        files = unseen_voice_files(folder, 4, 3.0)
        sets[tag] = [(f"{tag}-{n}", x, m) for n, x, m in audio_utterances(files, recipe)]
    result = {"settings": vars(a) | {"out": str(a.out)}}
    for name, utts in sets.items():
        r = evaluate_model(model, head, recipe, utts, mode="folded", seed=0, seeds=a.seeds,
                           postfilter=synthesis.CLI_POSTFILTER, envelope=synthesis.CLI_ENVELOPE_DB,
                           max_seconds=3.0, progress=False)
        result[name] = {"systems": r["systems"], "standard_error": r.get("standard_error")}
        print(f"{name}:\n{r['table']}", flush=True)
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
