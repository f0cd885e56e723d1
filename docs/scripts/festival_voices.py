"""Low male voices for fitting the learned F0 estimate (session 21): Festival reads the
Asterisk transcripts with three voices the vocoder and its evaluation never use.

The learned estimate (`dmol.audio.pitch_net`) fitted on the one female training voice is worse
than the comb on Carlo's male voice (docs/quality.md, sessions 19-20): it never saw a low
voice's mel. Debian packages Festival voices under permissive licences, three of them male:
`festvox-kallpc16k` and `festvox-kdlpc16k` (US English diphones, CMU/OGI licence) and
`festvox-ru` (Russian unit selection, BSD-like). (The Italian `festvox-itapc16k` is GPL-2:
speech it synthesizes is made of its recordings, so it is left out of a CC-BY-SA bundle.)
Each reads the transcripts of its language's Asterisk prompts, less the prompts any
evaluation uses (the built-in held-out split, and the first 103 files of the Russian folder,
which `dmol evaluate --max-utterances 103` reads), the diphone voices at mean pitches from 75
to 145 Hz in turn so that the set spans a range of low voices. Writes 16 kHz WAVs into OUT
(one folder per voice) for `dmol export --fit-pitch DATA --fit-pitch-audio OUT`; texts
Festival cannot say (it writes no samples) are skipped and named.

    apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-ru
    python docs/scripts/festival_voices.py data/ OUT
"""

from __future__ import annotations

import gzip
import itertools
import re
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

from dmol.audio.corpus import ASTERISK_NON_SPEECH, list_split

SOUNDS = Path("/usr/share/asterisk/sounds")
DOC = Path("/usr/share/doc")
# voice, transcript language, folder whose first 103 prompts are evaluated, prompts read
VOICES = (("kal_diphone", "en", None, 100), ("ked_diphone", "en", None, 75),
          ("msu_ru_nsh_clunits", "ru", "ru_RU_f_IvrvoiceRU", 60))
MEANS = (75, 95, 115, 130, 145)  # Hz: the diphone voices' target mean pitch, in turn
EVALUATED = 103


def transcripts(lang: str) -> dict[str, str]:
    """name -> text of the Asterisk core sounds' transcript (parenthesized English glosses and
    bracketed stage directions removed)."""
    path = DOC / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz"
    out = {}
    for line in gzip.open(path, "rt", encoding="utf-8"):
        name, sep, text = line.partition(":")
        if not sep or line.startswith(";") or name.strip() in ASTERISK_NON_SPEECH:
            continue
        text = re.sub(r"\([^)]*\)|\[[^]]*\]", " ", text).replace("...", " ").strip()
        if len(text.split()) >= 3:  # a few words at least: single words are mostly silence
            out[name.strip().split("/")[-1]] = text
    return out


def main(data: str, out: str) -> None:
    held_out = {p.stem for p in list_split(data, "val")}
    for voice, lang, evaluated, count in VOICES:
        skip = set(held_out)
        if evaluated:
            skip |= {p.stem for p in sorted((SOUNDS / evaluated).glob("*.g722"))[:EVALUATED]}
        texts = [(n, t) for n, t in sorted(transcripts(lang).items()) if n not in skip][:count]
        folder = Path(out) / voice
        folder.mkdir(parents=True, exist_ok=True)
        means = itertools.cycle(MEANS)
        failed: list[str] = []
        for name, text in texts:
            setup = [f"(voice_{voice})"]
            if voice.endswith("_diphone"):
                m = next(means)
                setup.append(f"(set! int_lr_params '((target_f0_mean {m}) (target_f0_std "
                             f"{m // 6}) (model_f0_mean 170) (model_f0_std 34)))")
            with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as fh:
                fh.write(text + "\n")
                fh.flush()
                cmd = ["text2wave", *itertools.chain(*(["-eval", s] for s in setup)), fh.name,
                       "-F", "16000", "-o", str(folder / f"{name}.wav")]
                subprocess.run(cmd, check=True, capture_output=True)
            wav = folder / f"{name}.wav"
            try:  # an empty file or a header alone: text2wave found nothing it could say
                with wave.open(str(wav)) as w:
                    empty = w.getnframes() < 1600
            except (EOFError, wave.Error):
                empty = True
            if empty:
                wav.unlink()
                failed.append(name)
        print(f"{voice}: {len(texts) - len(failed)} prompts -> {folder}"
              + (f" ({len(failed)} said nothing: {', '.join(failed[:5])}...)" if failed else ""))


if __name__ == "__main__":
    main(*sys.argv[1:3])
