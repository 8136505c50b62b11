"""Where the bundled notebooks and data samples are: the only module that names those locations.

The repository keeps ``notebooks/`` and ``data_samples/`` at its top level; a wheel ships them as package data
inside ``medwb/`` (``setup.py`` maps ``medwb.notebooks`` -> ``notebooks`` and ``medwb.data_samples`` ->
``data_samples``; ``pyproject.toml`` lists which files ship). So:

- installed from a wheel, ``importlib.resources.files("medwb")`` holds ``notebooks/`` and ``data_samples/``;
- run from a source checkout (``pip install -e .`` or ``PYTHONPATH=checkout``), they are the checkout's own
  top-level folders, beside the imported ``medwb/`` package. The imported package decides, never an editable
  finder that may point at another checkout.

Files must be real paths on disk (papermill, NumPy and the study record them by path), which holds for every
install pip makes; a zipped import is refused with a fix.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

NOTEBOOKS = "notebooks"
DATA_SAMPLES = "data_samples"
#: notebooks that are an app's page (served by ``medwb review``), not notebooks to open and edit
APP_NOTEBOOKS = ("review_app.ipynb",)


def _package_dir() -> Path:
    root = files("medwb")
    if not isinstance(root, Path):
        raise FileNotFoundError(f"{root}: medwb is imported from an archive; its notebooks and data samples need "
                                "real files. Fix: install it with pip (pip install medwb-*.whl)")
    return root.resolve()


def source_checkout() -> Path | None:
    """The repository root when medwb is imported from a source checkout (``pyproject.toml`` beside the
    package), else ``None`` (an installed wheel: the folder above ``medwb/`` is site-packages)."""
    root = _package_dir().parent
    return root if (root / "pyproject.toml").is_file() and (root / NOTEBOOKS).is_dir() else None


def resource_dir(kind: str) -> Path:
    """Folder of ``kind`` (``"notebooks"`` or ``"data_samples"``): package data in a wheel, the top-level
    folder in a source checkout."""
    if kind not in (NOTEBOOKS, DATA_SAMPLES):
        raise ValueError(f"{kind!r}: unknown resource folder. Fix: use {NOTEBOOKS!r} or {DATA_SAMPLES!r}")
    packaged = _package_dir() / kind
    if packaged.is_dir():
        return packaged
    checkout = source_checkout()
    if checkout is not None:
        return checkout / kind
    raise FileNotFoundError(f"{packaged}: medwb's {kind} are missing from this install. Fix: reinstall medwb "
                            "from a wheel built by `pip wheel .`, or run from a source checkout (pip install -e .)")


def notebook_path(name: str) -> Path:
    """Path of a bundled notebook by file name (``"01_explore.ipynb"``) or stem (``"01_explore"``)."""
    p = resource_dir(NOTEBOOKS) / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not p.is_file():
        known = ", ".join(sorted(q.stem for q in p.parent.glob("*.ipynb")))
        raise FileNotFoundError(f"{p}: notebook not found. Fix: use one of {known}")
    return p


def sample_path(relative: str) -> Path:
    """Path of a bundled data sample, relative to ``data_samples/`` (``"classification_2d/pneumoniamnist.npz"``).

    A wheel ships only the samples the demo and the notebooks' defaults use (see ``data_samples/README.md``);
    the others exist in a source checkout only.
    """
    p = resource_dir(DATA_SAMPLES) / relative
    if not p.exists():
        where = "this source checkout" if source_checkout() else "the installed wheel (it ships a subset)"
        raise FileNotFoundError(f"{p}: no such data sample in {where}. Fix: pass your own data path, or use a "
                                "source checkout for the full data_samples/")
    return p


#: The dataset of ``medwb demo`` and the default of notebooks 02 and 03: PneumoniaMNIST (CC BY 4.0).
DEMO_DATA = "classification_2d/pneumoniamnist.npz"
#: The default of notebook 01 (3D viewer and mask checks): MSD Task04 hippocampus (CC BY-SA 4.0).
EXPLORE_DATA = "segmentation_3d/hippocampus"


def default_demo_data() -> Path:
    """Path of the demo's dataset (:data:`DEMO_DATA`)."""
    return sample_path(DEMO_DATA)


def copy_notebooks(dest: str | Path, *, overwrite: bool = False) -> tuple[list[Path], list[Path]]:
    """Copy the bundled notebooks into ``dest`` to open them in JupyterLab (a wheel keeps them in site-packages).

    Returns (copied, skipped): an existing file is kept unless ``overwrite``, so a user's edits are never lost.
    """
    import shutil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied: list[Path] = []
    skipped: list[Path] = []
    for src in sorted(resource_dir(NOTEBOOKS).glob("*.ipynb")):
        if src.name in APP_NOTEBOOKS:
            continue
        target = dest / src.name
        if target.exists() and not overwrite:
            skipped.append(target)
            continue
        shutil.copyfile(src, target)
        copied.append(target)
    return copied, skipped
