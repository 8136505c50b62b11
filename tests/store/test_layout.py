"""The study layout is the one place that names a study's files: no other module spells the database name, and
the store's own modules, purge and crypto never spell a sub-folder name either."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from medwb.store import Study, StudyLayout, checkpoint_path, layout

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "medwb"
LAYOUT = PKG / "store" / "layout.py"
# modules that must take even sub-folder names from the layout (the store itself, purge, crypto)
STRICT = sorted((PKG / "store").glob("*.py")) + [PKG / "privacy" / "purge.py", PKG / "privacy" / "crypto.py"]


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal in code, f-string parts included; docstrings are prose, not code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def test_only_the_layout_spells_the_database_name() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{line}" for p in sorted(PKG.rglob("*.py")) if p != LAYOUT
                 for line, s in _string_constants(p) if layout.DB_NAME in s]
    assert offenders == [], "use medwb.store.layout (db_path / is_study / Study.exists) instead of the literal"


@pytest.mark.parametrize("path", STRICT, ids=lambda p: p.name)
def test_store_purge_and_crypto_take_folder_names_from_the_layout(path: Path) -> None:
    if path == LAYOUT:
        return
    names = set(layout.SUBFOLDERS) | {layout.PURGE_AUDIT, layout.NIFTI_MANIFEST}
    assert [(line, s) for line, s in _string_constants(path) if s in names] == []


def test_paths(tmp_path: Path) -> None:
    lay = StudyLayout(tmp_path / "s")
    assert lay.db == tmp_path / "s" / "study.sqlite"
    assert [p.name for p in lay.db_files()] == ["study.sqlite", "study.sqlite-wal", "study.sqlite-shm", "study.sqlite-journal"]
    assert checkpoint_path(tmp_path / "s", 7) == lay.checkpoint(7) == tmp_path / "s" / "models" / "round_007.pt"
    assert lay.creating_db(123, "ab12").name == ".study.sqlite.creating-123-ab12"
    assert lay.label_mask("case 1/a", "dr x", "human", None, 5).name == "case_1_a__dr_x__human__r0__L000005.npy"
    assert not Study.exists(lay.folder)
    with Study.create(lay.folder, dataset_path="x.npz", task="classification", classes=["a", "b"]) as st:
        assert Study.exists(lay.folder) and st.layout == lay and st.db_path == lay.db
        assert all(p.is_dir() for p in lay.subfolders())
        assert st.checkpoint_path(3) == lay.models / "round_003.pt"
    (lay.folder / ".study.sqlite.creating-99999999-dead").write_bytes(b"")
    assert lay.creating_dbs() == [(lay.folder / ".study.sqlite.creating-99999999-dead", 99999999)]
