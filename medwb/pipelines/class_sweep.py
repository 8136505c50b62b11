"""Labels needed against the number of classes: the same simulation on nested class subsets of one dataset.

Why: "a 10-class set needs fewer labels than a 100-class one" is a question users ask before they plan a
labelling budget. This answers it on real data: the dataset is cut to nested subsets of its classes (the first
2, 4, ... of a seeded order, so each subset contains the smaller ones), every subset gets the same pool size
(``max_pool``) and the same arms (:func:`medwb.pipelines.simulate.run_simulation`), and the labels needed to
reach 98% of that subset's own all-labels result are collected per class count.

Outputs under ``out_dir``: ``classes_<k>/`` (each a whole simulation: curves, summary, studies),
``class_sweep.csv`` (columns :data:`SWEEP_COLUMNS`) and ``class_sweep.png``. The validation report shows the
table and the figure when given the CSV (``build_report(class_sweep=...)``).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medwb.atomic import ensure_output_dir
from medwb.errors import DataError

SWEEP_COLUMNS = ["n_classes", "classes", "strategy", "metric", "pool", "full_value", "labels_at_budget",
                 "value_at_budget", "share_of_full", "labels_to_98pct", "fraction_to_98pct", "seeds"]
_SPLITS = ("train", "val", "test")


def class_subset_npz(src: str | Path, classes: Sequence[int], dest: str | Path) -> Path:
    """Write a MedMNIST-layout NPZ (``<split>_images`` / ``<split>_labels``) holding only ``classes``,
    relabelled ``0..k-1`` in the given order (the mapping is stored as ``class_map``: new -> original)."""
    src = Path(src)
    with np.load(src) as z:
        missing = [f"{s}_{p}" for s in _SPLITS for p in ("images", "labels") if f"{s}_{p}" not in z]
        if missing:
            raise DataError(src, f"not a MedMNIST-layout NPZ (missing {', '.join(missing)})",
                            "pass a file with train/val/test _images and _labels arrays")
        out: dict[str, Any] = {}
        for s in _SPLITS:
            y = np.asarray(z[f"{s}_labels"]).reshape(-1)
            unknown = sorted(set(int(c) for c in classes) - set(np.unique(y).tolist()))
            if unknown:
                raise DataError(src, f"class(es) {unknown} do not occur in the {s} split",
                                f"choose classes among {sorted(np.unique(y).tolist())}")
            keep = np.isin(y, classes)
            remap = {int(c): i for i, c in enumerate(classes)}
            out[f"{s}_images"] = z[f"{s}_images"][keep]
            out[f"{s}_labels"] = np.array([remap[int(v)] for v in y[keep]], dtype=np.uint8).reshape(-1, 1)
    out["class_map"] = np.asarray(classes, dtype=np.int64)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.stem + ".tmp.npz")
    np.savez_compressed(tmp, **out)
    tmp.replace(dest)
    return dest


def nested_class_order(data: str | Path, random_state: int = 0) -> list[int]:
    """Every class of the training split in a seeded random order: subset k = its first k classes."""
    with np.load(data) as z:
        classes = np.unique(np.asarray(z["train_labels"]).reshape(-1))
    return [int(c) for c in np.random.default_rng(random_state).permutation(classes)]


def run_class_sweep(data: str | Path, *, class_counts: Sequence[int], out_dir: str | Path,
                    strategies: Sequence[str], budget: float, rounds: int, seeds: int | Sequence[int],
                    max_pool: int | None = None, random_state: int = 0, plaintext: bool = False,
                    **simulate: Any) -> pd.DataFrame:
    """One :func:`~medwb.pipelines.simulate.run_simulation` per class count on nested class subsets (see the
    module doc); ``simulate`` passes further options (epochs, train, pretrain_config, ...). Returns the sweep
    table (also ``class_sweep.csv`` + ``class_sweep.png``).

    With a medwb key configured (``MEDWB_KEY_FILE`` / ``MEDWB_KEY``) the sweep is as protected as a simulation:
    ``out_dir`` is an encrypted zone (tables, figure, studies encrypted) and the class-subset images are written
    to a RAM-backed private folder removed at the end, not beside the results; ``plaintext`` writes the tables
    and figure in clear (the subsets stay private)."""
    from medwb.pipelines.simulate import output_writer, run_simulation
    from medwb.privacy.outputs import private_workdir
    from medwb.store import files

    order = nested_class_order(data, random_state)
    bad = [k for k in class_counts if not 2 <= int(k) <= len(order)]
    if bad:
        raise DataError(data, f"class counts {bad} are not between 2 and the {len(order)} classes of the dataset",
                        f"pass counts in 2..{len(order)}")
    out = ensure_output_dir(out_dir)
    write, key = output_writer(out, plaintext)
    rows = []
    with private_workdir("medwb-class-sweep-") if key is not None else nullcontext(out / "subsets") as subsets:
        for k in sorted({int(k) for k in class_counts}):
            classes = order[:k]
            sub = class_subset_npz(data, classes, Path(subsets) / f"{Path(data).stem}_{k}classes.npz")
            summary = run_simulation(sub, strategies=strategies, budget=budget, rounds=rounds, seeds=seeds,
                                     out_dir=out / f"classes_{k}", max_pool=max_pool, plaintext=plaintext,
                                     **simulate)
            curves = pd.read_csv(io.BytesIO(files.read_bytes(out / f"classes_{k}" / "curves.csv")))
            pool = int(curves["n_labeled"].max())
            for r in summary.itertuples(index=False):
                rows.append({"n_classes": k, "classes": " ".join(map(str, classes)), "strategy": r.strategy,
                             "metric": r.metric, "pool": pool, "full_value": r.full_value,
                             "labels_at_budget": r.n_labeled_at_budget, "value_at_budget": r.value_at_budget,
                             "share_of_full": r.share_of_full, "labels_to_98pct": r.labels_to_98pct,
                             "fraction_to_98pct": r.fraction_to_98pct, "seeds": r.seeds})
    table = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    write(out / "class_sweep.csv", table.to_csv(index=False).encode())
    from medwb.report.figures import class_sweep_figure

    png = io.BytesIO()
    class_sweep_figure(table).savefig(png, dpi=110, format="png")
    write(out / "class_sweep.png", png.getvalue())
    return table
