"""Active-learning rounds (their selection and status) and the models registered for them."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.errors import DataError, StoreError
from medwb.store.values import dumps, flatten, jsonable, now

if TYPE_CHECKING:
    from medwb.store.study import Study


def start_round(
    study: Study, number: int, strategy: str, params: Mapping[str, Any], selected_ids: Sequence[str],
    scores: Sequence[float] | np.ndarray,
) -> None:
    """Record the start of round ``number`` and its selection. Restarting an unfinished round (after a crash)
    replaces its selection; a finished round cannot be restarted."""
    number = int(number)
    selected = [str(s) for s in selected_ids]
    sc = [jsonable(float(s)) for s in np.asarray(scores, dtype=float).ravel()]
    if len(sc) not in (0, len(selected)):
        raise StoreError(f"round {number}: {len(selected)} selected ids but {len(sc)} scores. Fix: pass one score per id")
    missing = [s for s in selected if study.conn.execute("SELECT 1 FROM cases WHERE case_id = ?", (s,)).fetchone() is None]
    if missing:
        raise DataError(study.db_path, f"round {number} selects unknown case ids {missing[:5]}", "add the cases first")
    row = study.conn.execute("SELECT status FROM rounds WHERE number = ?", (number,)).fetchone()
    if row and row[0] == "finished":
        raise StoreError(f"round {number} is already finished. Fix: start round {current_round(study) + 1}")
    with study.transaction() as c:
        c.execute(
            "INSERT OR REPLACE INTO rounds (number, strategy, params, selected_ids, scores, status, started_at, finished_at) "
            "VALUES (?,?,?,?,?, 'started', ?, NULL)",
            (number, str(strategy), dumps(dict(params)), json.dumps(selected), json.dumps(sc), now()),
        )


def save_round_autolabel(study: Study, number: int, stats: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the auto-label statistics of round ``number``'s proposed batch in its ``params`` (``autolabel_stats``),
    unless already kept: the first proposal of the round (its whole batch) is the one measured, so a round resumed
    after a kill reports the same statistics, not those of the cases left. Returns the kept statistics."""
    with study.transaction() as c:
        row = c.execute("SELECT params FROM rounds WHERE number = ?", (int(number),)).fetchone()
        if row is None:
            raise StoreError(f"{study.db_path}: no round {number}. Fix: start the round first")
        params = json.loads(row[0])
        if isinstance(params.get("autolabel_stats"), dict):
            return dict(params["autolabel_stats"])
        params["autolabel_stats"] = {str(k): jsonable(v) for k, v in stats.items()}
        c.execute("UPDATE rounds SET params = ? WHERE number = ?", (dumps(params), int(number)))
    return dict(params["autolabel_stats"])


def finish_round(study: Study, number: int) -> None:
    """Mark a round finished (its labels and model are saved)."""
    with study.transaction() as c:
        cur = c.execute("UPDATE rounds SET status = 'finished', finished_at = ? WHERE number = ?", (now(), int(number)))
        if cur.rowcount == 0:
            raise StoreError(f"round {number} was never started. Fix: call start_round({number}, ...) first")


def current_round(study: Study) -> int:
    """The highest round number recorded (started or finished), 0 when none. Use :func:`rounds` for status."""
    row = study.conn.execute("SELECT MAX(number) FROM rounds").fetchone()
    return int(row[0]) if row[0] is not None else 0


def open_round(study: Study) -> int | None:
    """The round started and not yet finished (the highest, if several), None when none is open."""
    row = study.conn.execute("SELECT MAX(number) FROM rounds WHERE status = 'started'").fetchone()
    return None if row[0] is None else int(row[0])


def last_finished_round(study: Study) -> int:
    """The highest finished round, 0 when none: a resumed study continues after it."""
    row = study.conn.execute("SELECT MAX(number) FROM rounds WHERE status = 'finished'").fetchone()
    return int(row[0]) if row[0] is not None else 0


def rounds(study: Study) -> pd.DataFrame:
    """Rounds with strategy, params (dict), selected_ids (list), scores (list), status and timestamps."""
    df = study.query("SELECT * FROM rounds ORDER BY number")
    for col in ("params", "selected_ids", "scores"):
        df[col] = [json.loads(x) for x in df[col]]
    return df


def add_model(study: Study, round: int, checkpoint_path: str | Path, metrics: Mapping[str, Any]) -> str:
    """Register a trained model (its checkpoint must exist). Returns its version, e.g. ``r3-v7``."""
    cp = Path(checkpoint_path)
    if not cp.exists():
        raise DataError(cp, "checkpoint not found", "save the checkpoint (medwb.models.save_checkpoint) before registering it")
    with study.transaction() as c:
        n = c.execute("SELECT COUNT(*) FROM models").fetchone()[0] + 1
        version = f"r{int(round)}-v{n}"
        n_labeled = c.execute("SELECT COUNT(DISTINCT case_id) FROM labels WHERE superseded = 0").fetchone()[0]
        c.execute(
            "INSERT INTO models (version, round, checkpoint_path, metrics, n_labeled, created_at) VALUES (?,?,?,?,?,?)",
            (version, int(round), study.rel(cp), dumps(dict(metrics)), int(n_labeled), now()),
        )
    return version


def models(study: Study) -> pd.DataFrame:
    """Registered models: version, round, checkpoint_path (absolute), metrics (dict), n_labeled, created_at."""
    df = study.query("SELECT * FROM models ORDER BY created_at, rowid")
    df["metrics"] = [json.loads(x) for x in df["metrics"]]
    df["checkpoint_path"] = [str(study.path(p)) for p in df["checkpoint_path"]]
    return df


def metrics_curve(study: Study) -> pd.DataFrame:
    """Long table for learning curves: one row per (model, numeric metric): round, model_version, n_labeled,
    metric, value. n_labeled is the number of labelled cases when the model was registered."""
    out = []
    for rec in models(study).to_dict("records"):
        for k, v in flatten(rec["metrics"]).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v):
                out.append({"round": rec["round"], "model_version": rec["version"], "n_labeled": rec["n_labeled"],
                            "metric": k, "value": float(v)})
    return pd.DataFrame(out, columns=["round", "model_version", "n_labeled", "metric", "value"])
