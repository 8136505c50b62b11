"""The human actions round 1 needs with and without the structure model, counted by a simulated reader (issue 13).

Why here: the count must come from the real components a person would use, not a formula. Both arms run on
their own fresh study, the same round cases and the same simulated reader who knows the truth:

- **without**: the round's cases in the review queue with no pre-label: the reader chooses each class (one
  action each, a choice among all classes);
- **with**: the cluster gallery (:class:`medwb.ui.widgets.clusters.ClusterGallery`): one naming action per cluster
  (the class of the majority of its ``shown`` most typical members, what the reader sees), then the named cases
  in the review queue: accept (one key) when the structure pre-label is right, correct (one choice) when not.

The round's cases are the named clusters' typical members (the gallery), in both arms. Counted: namings, class
choices, accepts, corrections, all actions, correct labels after the round, and the pool cases whose structure
pre-label is correct with no case-level action at all.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medwb.al.structure import ClusterModel, name_by_typical_members, structure_prelabels
from medwb.store import Study

READER = "simulated-reader"


def _study(folder: Path, case_ids: Sequence[str], classes: Mapping[int, str], dataset_path: str) -> Study:
    s = Study.create(folder, dataset_path=dataset_path, task="classification", classes=dict(classes))
    s.add_cases(pd.DataFrame({"case_id": [str(c) for c in case_ids], "split": "train"}))
    return s


def _row(arm: str, namings: int, decisions: list[dict], study: Study, truth: Callable[[str], int],
         pool_correct: int, pool: int) -> dict[str, object]:
    acts = pd.Series([d["action"] for d in decisions], dtype=object)
    lab = study.labels(latest=True)
    correct = int(sum(int(v) == truth(c) for c, v in zip(lab["case_id"], lab["value"])))
    return {"arm": arm, "naming_actions": namings, "class_choices": int((acts == "choose").sum()),
            "accepts": int((acts == "accept").sum() + sum(d["action"] == "change" and d.get("source") == "human"
                                                          for d in decisions)),
            "corrections": int(sum(d["action"] == "change" and d.get("source") == "corrected" for d in decisions)),
            "total_actions": namings + len(decisions), "labels": len(lab), "correct_labels": correct,
            "pool_correct_prelabels": pool_correct, "pool": pool}


def round_one_effort(folder: str | Path, model: ClusterModel, embeddings: np.ndarray,
                     load_image: Callable[[str], np.ndarray], classes: Mapping[int, str], truth: Callable[[str], int],
                     *, shown: int = 8, dataset_path: str = "pool") -> pd.DataFrame:
    """Run both arms in fresh studies under ``folder`` (``without/``, ``with/``); one row per arm (see the
    module doc). ``truth(case_id)`` is the class value the simulated reader knows."""
    from medwb.ui.widgets.clusters import ClusterGallery
    from medwb.ui.widgets.review import ReviewQueue

    folder = Path(folder)
    ids = list(model.case_ids)
    names = name_by_typical_members(model, truth, shown=shown)
    pre = structure_prelabels(model, names)
    pool_correct = int(sum(not pd.isna(p) and int(p) == truth(c) for c, p in zip(pre["case_id"], pre["prelabel"])))
    with _study(folder / "with", ids, classes, dataset_path) as s:
        g = ClusterGallery(s, model, embeddings, load_image, annotator=READER, shown=shown, min_view_seconds=0)
        for k, v in names.items():
            g.name(k, v)
        q = g.review()
        round_ids = [] if q is None else list(q.case_ids)
        with_row = _row("with the structure model", len(names), [] if q is None else q.run_oracle(truth), s, truth,
                        pool_correct, len(ids))
    with _study(folder / "without", ids, classes, dataset_path) as s:
        q0 = ReviewQueue(s, round_ids, None, load_image, round=1, annotator=READER, min_view_seconds=0)
        without_row = _row("without (choose each class)", 0, q0.run_oracle(truth), s, truth, 0, len(ids))
    return pd.DataFrame([without_row, with_row])


def effort_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (benchmarks/structure)."""
    cols = ["arm", "naming_actions", "class_choices", "accepts", "corrections", "total_actions", "correct_labels",
            "pool_correct_prelabels"]
    head = "| " + " | ".join(c.replace("_", " ") for c in cols) + " |"
    rows = ["| " + " | ".join(str(r[c]) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join([head, "|" + "---|" * len(cols), *rows])


__all__ = ["READER", "effort_markdown", "round_one_effort"]
