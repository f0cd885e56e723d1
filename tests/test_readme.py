"""The README's ten-line example runs as printed."""

import re
from pathlib import Path


def test_readme_example_runs(capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"## Ten lines\s+```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "bits/sample" in out and "torch.Size([4, 8000])" in out
