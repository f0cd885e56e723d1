"""The layering the project promises: the distributions know nothing of audio or the vocoder."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "dmol"
DISTRIBUTIONS = ["logistic.py", "gaussian.py", "mulaw.py", "coupled.py", "fused.py", "units.py",
                 "_validate.py", "compat/r9y9.py", "compat/pixelcnn.py"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_distributions_do_not_import_audio_or_vocoder():
    for rel in DISTRIBUTIONS:
        bad = {m for m in _imports(SRC / rel) if m.startswith(("dmol.audio", "dmol.wavenet"))}
        bad |= {m for m in _imports(SRC / rel) if m.split(".")[0] in ("librosa", "soundfile")}
        assert not bad, f"{rel} imports {sorted(bad)}"


def test_importing_dmol_loads_no_audio_stack():
    code = ("import sys, dmol; "
            "print(sorted(m for m in sys.modules if m.startswith(('dmol.audio', 'dmol.wavenet',"
            " 'librosa', 'soundfile'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
