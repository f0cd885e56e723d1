#!/usr/bin/env bash
# Installed-wheel smoke test (run by `make test`): build dmol's wheel, install it into a fresh
# virtual environment and use it from a folder outside the repository, as a user would:
# import, the README's example, `dmol bench loss --help`, and a short vocode with the shipped
# model (its bundle and the C++ kernel's source must come from the wheel's package data).
#
# Offline and quick: the wheel is built without build isolation (setuptools is in .venv) from a
# copy of the sources, so nothing is written into the checkout; the fresh venv reaches the
# dependencies already installed in .venv through a .pth line, and nothing is downloaded.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-$repo/.venv/bin/python}  # the environment holding the dependencies
py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")  # absolute, symlink kept (a venv)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$SECONDS

# 1. the wheel, built from a copy of what it is made of (no build/ or egg-info in the checkout)
mkdir "$tmp/src" "$tmp/dist"
tar -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md src \
  | tar -C "$tmp/src" -xf -
"$py" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/dist" "$tmp/src"
wheel=$(ls "$tmp"/dist/dmol-*.whl)

# 2. a fresh venv; its only link to .venv is the dependencies' folder (a plain path line, so
#    .venv's own .pth files, among them the editable install of this checkout, are not read)
"$py" -m venv --without-pip "$tmp/venv"
vpy=$tmp/venv/bin/python
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }
purelib "$py" > "$(purelib "$vpy")/_dmol_smoke_deps.pth"
"$py" -m pip --python "$vpy" install -q --no-deps --no-index "$wheel"

# 3. use it from outside the repository
mkdir "$tmp/work"
cd "$tmp/work"
export PATH="$tmp/venv/bin:$PATH"
unset PYTHONPATH
"$vpy" - "$repo/README.md" "$tmp/venv" <<'EOF'
import re
import sys
from pathlib import Path

import dmol

venv = Path(sys.argv[2]).resolve()
assert venv in Path(dmol.__file__).resolve().parents, f"dmol imported from {dmol.__file__}"
block = re.search(r"## Ten lines\s+```python\n(.*?)```", Path(sys.argv[1]).read_text(), re.S)
exec(compile(block.group(1), "README.md", "exec"), {})

# the kernel sources and the shipped model are package data of the wheel
import dmol._native
from dmol.wavenet.checkpoint import resolve_model_path

assert "dmol_wavenet_run" in dmol._native.source("wavenet_step.cpp")
assert venv in resolve_model_path("pretrained").resolve().parents

# a quarter of a second of a voiced vowel-like sound for the vocode step
import numpy as np
import soundfile as sf

t = np.arange(4000) / 16000
wav = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1))
sf.write("in.wav", (0.3 * wav / np.abs(wav).max()).astype(np.float32), 16000)
EOF
dmol bench loss --help > bench_help.txt
grep -q -- "--quick" bench_help.txt || { cat bench_help.txt; echo "dmol bench loss --help: no --quick"; exit 1; }
dmol vocode pretrained in.wav --out out --no-progress
"$vpy" -c "
import soundfile as sf
x, sr = sf.read('out/in.wav')
assert sr == 16000 and len(x) >= 3000 and abs(x).max() > 0, (sr, len(x))
print(f'wheel smoke: {len(x)} samples vocoded at {sr} Hz')"
echo "wheel smoke test passed in $((SECONDS - t0)) s ($(basename "$wheel"))"
