"""The house rules of docs/ARCHITECTURE.md, checked on the source so a change that breaks one fails here.

One owner per concept only stays true if nobody reaches into another module's private names, widgets stay in
``medwb.ui``, lower rooms never import higher ones, and no class grows into a second package.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "medwb"
SOURCES = sorted(p for p in PKG.rglob("*.py"))

#: the flow of data, lowest first; a module may import its own room and the rooms before it.
#: ``errors``, ``atomic``, ``offline``, ``resources`` and ``metrics`` sit beside the flow and import no room.
#: ``compute`` (where pool-wide work runs: in process or on Dask) runs models on data, so it sits above them and
#: below everything that scores a pool.
ROOMS = ["data", "store", "models", "compute", "al", "explain", "report", "ui", "pipelines", "cli"]
BESIDE = {"errors", "atomic", "offline", "resources", "metrics", "notebook_runner", "__init__", "privacy"}
#: the few downward-looking exceptions, each with its reason: (room, room), or (module, module) for one import.
ALLOWED_UP = {
    # the store encrypts with the privacy package's crypto (privacy sits beside the flow)
    ("medwb.al.class_evidence", "medwb.explain.attributions"):
        "the loop stores each proposed classification case's Grad-CAM for the review app's readers when it proposes "
        "the round, the one moment it holds the model (their pages load none); Grad-CAM keeps its one home in explain",
}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every ``import``/``from`` in the file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
    return out


def test_no_private_name_is_imported_across_modules() -> None:
    bad = [f"{p.relative_to(PKG.parent)}:{line} imports {name} from {mod}"
           for p in SOURCES for mod, names, line in _imports(p) if mod.startswith("medwb")
           for name in names if name.startswith("_") and not name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_only_ui_imports_widgets_and_display() -> None:
    bad = [f"{p.relative_to(PKG.parent)}:{line} imports {mod}" for p in SOURCES if _room(_module(p)) != "ui"
           for mod, _, line in _imports(p) if mod.split(".")[0] in ("ipywidgets", "IPython", "ipyniivue")]
    assert not bad, "\n".join(bad)


def test_lower_rooms_never_import_higher_ones() -> None:
    bad = []
    for p in SOURCES:
        here = _room(_module(p))
        if here in BESIDE - {"privacy"}:
            level = -1
        elif here == "privacy":
            level = ROOMS.index("store")  # purge and crypto work through the store's layout
        else:
            level = ROOMS.index(here)
        for mod, _, line in _imports(p):
            if not mod.startswith("medwb.") or _room(mod) in BESIDE:
                continue
            there = _room(mod)
            if ROOMS.index(there) > level and not {(here, there), (_module(p), mod)} & set(ALLOWED_UP):
                bad.append(f"{p.relative_to(PKG.parent)}:{line} ({here}) imports {mod} ({there})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_class_over_300_lines(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            n = node.end_lineno - node.lineno + 1
            assert n <= 300, f"{path.relative_to(PKG.parent)}: class {node.name} has {n} lines"


def test_report_and_explain_never_import_the_loop() -> None:
    bad = [f"{p.relative_to(PKG.parent)}:{line}" for p in SOURCES if _room(_module(p)) in ("report", "explain")
           for mod, _, line in _imports(p) if mod == "medwb.al.loop"]
    assert not bad, "\n".join(bad)


def test_test_modules_have_unique_names() -> None:
    """pytest's default ("prepend") import mode imports test files by basename: two ``test_x.py`` in different
    folders stop the whole suite at collection ("import file mismatch")."""
    from collections import defaultdict

    seen: dict[str, list[str]] = defaultdict(list)
    for p in Path(__file__).parent.rglob("test_*.py"):
        seen[p.name].append(str(p.relative_to(Path(__file__).parent)))
    assert not {k: v for k, v in seen.items() if len(v) > 1}
