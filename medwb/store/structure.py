"""The structure model's actions in the store: which cluster a person named (and with which class), split or merged.

Why stored: naming the clusters of the pool is the first work a person does on a new dataset (issue 13), and it
must survive a kernel restart and be auditable like a label. A naming action keeps the case ids it pre-labelled,
so the pre-labels can be rebuilt from the store alone (:func:`structure_names`), whatever the cluster indices
become after later splits and merges. The labels a person then decides on these pre-labels are ordinary labels
(source ``human`` when accepted, ``corrected`` when changed); their note starts with :data:`STRUCTURE_NOTE`,
which is how a label says its pre-label came from the structure model (:func:`structure_labels`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from medwb.errors import StoreError
from medwb.store.values import now

if TYPE_CHECKING:
    from medwb.store.study import Study

ACTIONS = ("name", "split", "merge")
#: the start of the note of a label decided on a structure-model pre-label (its provenance)
STRUCTURE_NOTE = "structure model"


def record_structure_action(study: Study, action: str, clusters: Sequence[int], *, by: str, value: int | None = None,
                            case_ids: Sequence[str] = ()) -> int:
    """Record one action on the clusters (one transaction); returns its id. ``name`` needs the class ``value``
    and the ``case_ids`` it pre-labels; ``split`` / ``merge`` record the clusters they changed."""
    if action not in ACTIONS:
        raise StoreError(f"structure action {action!r} is not one of {ACTIONS}. Fix: pick one of them")
    if not by or not str(by).strip():
        raise StoreError("no name for who acted on the clusters. Fix: pass by='<your name>'")
    picked = [int(c) for c in clusters]
    if not picked:
        raise StoreError(f"a {action} action without a cluster. Fix: pass the cluster(s) it is about")
    ids = [str(c) for c in case_ids]
    if action == "name":
        if value is None or not ids:
            raise StoreError("naming a cluster needs the class and its cases. Fix: pass value= and case_ids=")
        value = study.check_value(value)
        known = {r[0] for r in study.conn.execute("SELECT case_id FROM cases")}
        unknown = [c for c in ids if c not in known]
        if unknown:
            raise StoreError(f"unknown case ids {unknown[:5]} in a cluster name. Fix: add the cases to the study first")
    elif value is not None or ids:
        raise StoreError(f"a {action} action carries no class and no cases. Fix: name the new clusters afterwards")
    with study.transaction() as c:
        cur = c.execute("INSERT INTO structure_actions (action, clusters, value, case_ids, actor, created_at) "
                        "VALUES (?,?,?,?,?,?)", (action, json.dumps(picked), value, json.dumps(ids), str(by).strip(),
                                                 now()))
    return int(cur.lastrowid)


def structure_actions(study: Study) -> pd.DataFrame:
    """Every recorded action, oldest first: id, action, clusters (list), value, class_name, case_ids (list),
    actor, created_at."""
    df = study.query("SELECT id, action, clusters, value, case_ids, actor, created_at FROM structure_actions "
                     "ORDER BY id")
    df["clusters"] = [json.loads(x) for x in df["clusters"]]
    df["case_ids"] = [json.loads(x) for x in df["case_ids"]]
    df["value"] = pd.array(df["value"], dtype="Int64")
    df.insert(4, "class_name", pd.Series([None if pd.isna(v) else study.classes.get(int(v)) for v in df["value"]],
                                         index=df.index, dtype=object))
    return df


def structure_names(study: Study) -> pd.DataFrame:
    """The structure pre-label of each case a naming covered: its latest naming (a later name of a case wins).
    Columns: case_id, value, class_name, cluster, named_by, named_at, action_id."""
    latest: dict[str, tuple] = {}
    for r in structure_actions(study).itertuples(index=False):
        if r.action == "name":
            for cid in r.case_ids:
                latest[cid] = (cid, int(r.value), r.class_name, int(r.clusters[0]), r.actor, r.created_at, int(r.id))
    df = pd.DataFrame(list(latest.values()), columns=["case_id", "value", "class_name", "cluster", "named_by",
                                                      "named_at", "action_id"])
    df["value"] = df["value"].astype("int64")
    return df


def structure_labels(study: Study) -> pd.DataFrame:
    """The current labels a person decided on a structure-model pre-label (accepted: ``human``, changed:
    ``corrected``), with annotator and time as every label has."""
    cur = study.labels(latest=True)
    return cur[cur["note"].astype(str).str.startswith(STRUCTURE_NOTE)].reset_index(drop=True)


__all__ = ["ACTIONS", "STRUCTURE_NOTE", "record_structure_action", "structure_actions", "structure_labels",
           "structure_names"]
