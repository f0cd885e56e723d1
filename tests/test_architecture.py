"""The layering the project promises: the distributions know nothing of audio or the vocoder;
no import cycles; imports at the top of each module, except the few stated below."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "dmol"

# The layers, lowest first (README, "Layout of the code"); a module imports only modules of its
# own layer or of lower ones. The private helpers (_validate, _native, _fs) sit at the bottom.
LAYERS = {
    "distributions": ("dmol", "dmol.mixture", "dmol.logistic", "dmol.gaussian", "dmol.mulaw",
                      "dmol.coupled", "dmol.fused", "dmol.units", "dmol.compat",
                      "dmol._validate", "dmol._native", "dmol._fs"),
    "audio": ("dmol.audio",),
    "vocoder": ("dmol.wavenet",),
    "cli": ("dmol.cli", "dmol.__main__", "dmol.benchmarks"),
}


def _layer(module: str) -> int:
    """Index in LAYERS of a dmol module (the longest matching prefix decides)."""
    best = max(((len(p), i) for i, prefixes in enumerate(LAYERS.values()) for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and the README)"
    return best[1]


def test_importing_dmol_loads_no_audio_stack():
    code = ("import sys, dmol; "
            "print(sorted(m for m in sys.modules if m.startswith(('dmol.audio', 'dmol.wavenet',"
            " 'librosa', 'soundfile'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# Imports allowed inside functions, each with its reason; everything else (every dmol module
# among them) is imported at the top of the module, so the import graph below is complete.
DEFERRED = {
    "librosa": "optional ([audio] extra), slow to import",
    "soundfile": "optional ([audio] extra)",
    "scipy": "optional ([audio] extra)",
    "G722": "optional ([audio] extra)",
    "threadpoolctl": "optional ([audio] extra)",
    "pysptk": "optional ([eval] extra)",
    "pyworld": "optional ([eval] extra)",
    "torch.utils.tensorboard": "optional ([audio] extra), slow to import",
    "matplotlib": "about 1 s of start-up that only drawing should pay",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> set[str]:
    """The modules an import statement runs: ``from pkg import name`` runs ``pkg.name`` when
    that is a module, else ``pkg`` (parent packages, which always run first, are left out)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = node.module or ""
    if node.level:
        here = module.split(".")[: len(module.split(".")) - (node.level - (1 if is_package else 0))]
        base = ".".join(here + ([node.module] if node.module else []))
    subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return subs if len(subs) == len(node.names) else subs | {base}


def _is_skipped_block(node: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` and ``if __name__ == "__main__":`` blocks (never run on import)."""
    return isinstance(node, ast.If) and any(k in ast.unparse(node.test)
                                            for k in ("TYPE_CHECKING", "__main__"))


def _module_level_imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: top-level ones, also inside try/if blocks."""
    found, todo = [], list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.Try, ast.If, ast.With)) and not _is_skipped_block(node):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo += getattr(node, field, [])
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body
    return found


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for node in _module_level_imports(path):
            deps |= _targets(node, name, path.name == "__init__.py")
        graph[name] = {d for d in deps if d in MODULES and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_sees_dmol_imports():
    graph = _import_graph()
    assert "dmol.wavenet.presets" in graph["dmol.wavenet.model"]
    assert "dmol._validate" in graph["dmol.logistic"]  # `from dmol import _validate as V`


def test_no_import_cycles():
    cycle = _cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_are_at_the_top_unless_stated():
    late = []
    for name, path in MODULES.items():
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for target in _targets(node, name, path.name == "__init__.py"):
                        if not target.startswith(tuple(DEFERRED)):
                            late.append(f"{name}.{fn.name} (line {node.lineno}): {target}")
    assert not late, "imports inside functions without a stated reason:\n" + "\n".join(late)


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    names, wrong = list(LAYERS), []
    for module, deps in _import_graph().items():
        wrong += [f"{module} ({names[_layer(module)]}) imports {d} ({names[_layer(d)]})"
                  for d in sorted(deps) if _layer(d) > _layer(module)]
    assert not wrong, "\n".join(wrong)


def test_distributions_import_no_audio_library():
    for module, path in MODULES.items():
        if _layer(module) == 0:
            found = {t.split(".")[0] for n in _module_level_imports(path)
                     for t in _targets(n, module, path.name == "__init__.py")}
            assert not found & {"librosa", "soundfile", "scipy"}, f"{module}: {found}"


def test_argument_parsing_lives_in_the_cli():
    """Library modules take arguments from Python callers; only the cli layer parses argv."""
    cli = list(LAYERS).index("cli")
    parsing = [m for m, path in MODULES.items() if _layer(m) != cli
               and any("argparse" in _targets(n, m, False) for n in ast.walk(ast.parse(
                   path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom)))]
    assert not parsing, f"argparse outside dmol.cli: {parsing}"


def test_layers_as_documented():
    assert _layer("dmol.logistic") < _layer("dmol.audio.lpc") < _layer("dmol.wavenet.model")
    assert _layer("dmol.wavenet.train") < _layer("dmol.cli.train")
    assert "dmol.cli.train" not in _import_graph()["dmol.wavenet.train"]  # its __main__ block


MAX_FUNCTION_LINES = 150


def test_functions_are_short_or_say_why():
    """A function reads top to bottom in one screenful or two; a longer one states why in its
    docstring (a line starting "Long because")."""
    long = []
    for name, path in MODULES.items():
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = fn.end_lineno - fn.lineno + 1
                doc = ast.get_docstring(fn) or ""
                if lines > MAX_FUNCTION_LINES and "Long because" not in doc:
                    long.append(f"{name}.{fn.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_no_c_source_inside_python_files():
    """Kernel sources are real files in dmol/csrc/ (package data), built by dmol._native."""
    inline = [name for name, path in MODULES.items() if "#include <" in path.read_text()]
    assert not inline, f"C/C++ source inside {inline}: move it to src/dmol/csrc/"
    assert sorted(p.name for p in (SRC / "csrc").glob("*.cpp")), "no kernel sources shipped"
