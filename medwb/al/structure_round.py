"""The structure model's first review round: named clusters become pre-labels a person accepts or corrects.

Why a round: the structure pre-labels must reach the labels the same way a model's do, through a person's
decision in the review queue (:class:`medwb.ui.widgets.review.ReviewQueue`), with provenance: the label's source
says how the person decided (``human`` accepted, ``corrected`` changed), its note that the pre-label came from the
:data:`medwb.store.structure.STRUCTURE_NOTE`, annotator and time as every label. The round is an ordinary round in
the store (strategy ``structure``), so ``loop.complete()`` trains the first model on it.

Every action is recorded in the store first (:meth:`Study.record_structure_action`); the round's pre-labels are
rebuilt from those records (:func:`structure_batch`, :func:`structure_prelabels`), so a restart loses nothing and
``loop.propose()`` on the open structure round proposes them too.

- :func:`name_cluster`: one naming action: a class for a cluster's ``typical`` members (default: the gallery the
  person looked at) or ``all`` its members.
- :func:`split_recorded` / :func:`merge_recorded`: the model's correction, recorded.
- :func:`open_structure_round` / :func:`structure_batch`: the round and the cases still waiting in it.
- :func:`structure_prelabels`: what ``loop.propose()`` returns on an open structure round (its pre-labels are the
  namings', not an untrained model's empty ones), so the readers' pages and ``run_review_rounds`` keep them.
- :func:`names_from_store`: which clusters of a (re)built model carry a stored name (the gallery after a restart).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.al.structure import ClusterModel, check_cluster, merge_clusters, split_cluster
from medwb.errors import ConfigError, StoreError
from medwb.store.structure import STRUCTURE_NOTE

if TYPE_CHECKING:
    from medwb.store import Study

MEMBERS = ("typical", "all")
STRATEGY = "structure"  # the rounds table's strategy of a structure round
SHOWN = 8  # typical members in a cluster's gallery


def naming_cases(model: ClusterModel, cluster: int, members: str = "typical", shown: int = SHOWN) -> list[str]:
    """The cases a naming of ``cluster`` pre-labels: its ``shown`` most typical members, or ``all`` of them."""
    if members not in MEMBERS:
        raise ConfigError(f"members={members!r} is not one of {MEMBERS}. Fix: 'typical' (the gallery shown, the "
                          "default) or 'all' (every member of the cluster)")
    k = check_cluster(model, cluster)
    return model.members(k) if members == "all" else model.typical(k, shown)


def name_cluster(study: Study, model: ClusterModel, cluster: int, value: int, *, by: str, members: str = "typical",
                 shown: int = SHOWN) -> list[str]:
    """Record that ``by`` named ``cluster`` as class ``value`` (the class's stored value, not its position in a
    menu); returns the case ids it pre-labels."""
    ids = naming_cases(model, cluster, members, shown)
    study.record_structure_action("name", [int(cluster)], by=by, value=value, case_ids=ids)
    return ids


def split_recorded(study: Study, model: ClusterModel, embeddings: np.ndarray, cluster: int, *, by: str,
                   random_state: int = 0) -> ClusterModel:
    """:func:`medwb.al.structure.split_cluster`, recorded as ``by``'s action."""
    out = split_cluster(model, embeddings, cluster, random_state)
    study.record_structure_action("split", [int(cluster)], by=by)
    return out


def merge_recorded(study: Study, model: ClusterModel, clusters: Sequence[int], *, by: str,
                   embeddings: np.ndarray | None = None) -> ClusterModel:
    """:func:`medwb.al.structure.merge_clusters`, recorded as ``by``'s action."""
    out = merge_clusters(model, clusters, embeddings)
    study.record_structure_action("merge", sorted({int(c) for c in clusters}), by=by)
    return out


def names_from_store(model: ClusterModel, stored: Mapping[str, int], shown: int = SHOWN) -> dict[int, int]:
    """Cluster -> class for the clusters whose ``shown`` most typical members all carry the same stored structure
    pre-label (``stored``: case_id -> value, :meth:`Study.structure_names`)."""
    out = {}
    for k in range(model.n_clusters):
        got = {stored.get(c) for c in model.typical(k, shown)}
        if len(got) == 1 and None not in got:
            out[k] = int(got.pop())
    return out


def open_structure_round(study: Study) -> int:
    """Open the review round of the named cases (or add new namings to the open structure round): the rounds
    table records it (strategy ``structure``), the proposals table holds each case's structure pre-label for the
    readers' pages. Returns the round number."""
    names = study.structure_names()
    if names.empty:
        raise StoreError("no cluster is named yet. Fix: name a cluster first (the cluster gallery, or name_cluster)")
    r = study.rounds()
    open_ = r[r["status"] != "finished"] if len(r) else r
    if len(open_) and open_.iloc[-1]["strategy"] != STRATEGY:
        raise StoreError(f"round {int(open_.iloc[-1]['number'])} ({open_.iloc[-1]['strategy']}) is open. Fix: "
                         "finish it (loop.complete()) before a structure round")
    number = int(open_.iloc[-1]["number"]) if len(open_) else study.current_round() + 1
    before = [str(c) for c in open_.iloc[-1]["selected_ids"]] if len(open_) else []
    labelled = set(study.labels(latest=True)["case_id"].astype(str))
    new = [c for c in names["case_id"] if c not in set(before) and c not in labelled]
    selected = before + new
    study.start_round(number, STRATEGY, {"named_cases": len(names), "naming_actions":
                                         int((study.structure_actions()["action"] == "name").sum())}, selected, [])
    value = dict(zip(names["case_id"], names["value"]))
    study.save_proposals(number, selected, [value.get(c) for c in selected])
    return number


def structure_batch(study: Study) -> pd.DataFrame:
    """The open structure round's cases still without a label, in round order, with their structure pre-label
    from the stored namings: round, case_id, prelabel, class_name, cluster, named_by (empty when none is open)."""
    cols = ["round", "case_id", "prelabel", "class_name", "cluster", "named_by"]
    r = study.rounds()
    open_ = r[(r["status"] != "finished") & (r["strategy"] == STRATEGY)] if len(r) else r
    if not len(open_):
        return pd.DataFrame(columns=cols)
    number, ids = int(open_.iloc[-1]["number"]), [str(c) for c in open_.iloc[-1]["selected_ids"]]
    labelled = set(study.labels(latest=True)["case_id"].astype(str))
    names = study.structure_names().set_index("case_id")
    todo = [c for c in ids if c not in labelled and c in names.index]
    n = names.loc[todo] if todo else names.iloc[:0]
    return pd.DataFrame({"round": number, "case_id": todo, "prelabel": n["value"].astype(int).tolist(),
                         "class_name": n["class_name"].tolist(), "cluster": n["cluster"].astype(int).tolist(),
                         "named_by": n["named_by"].tolist()}, columns=cols)


def round_origin(strategy: str | None) -> str:
    """Who proposed the pre-labels of a round of ``strategy``: the review queue's ``origin=`` (the start of each
    label's note), "structure model" for a structure round, empty for a model's round."""
    return STRUCTURE_NOTE if strategy == STRATEGY else ""


def structure_prelabels(study: Study, batch: pd.DataFrame) -> pd.DataFrame:
    """``batch`` (the open structure round's waiting cases) with the namings' pre-labels, no model confidence and
    nothing auto-accepted; the round's stored proposals are rewritten with the same pre-labels (reads kept)."""
    names = study.structure_names()
    value = dict(zip(names["case_id"].astype(str), names["value"].astype(int)))
    out = batch.assign(prelabel=pd.array([value.get(str(c)) for c in batch["case_id"]], dtype="Int64"),
                       confidence=np.nan, auto=False)
    r = study.rounds()
    number = int(r[r["status"] != "finished"].iloc[-1]["number"])
    selected = [str(c) for c in r[r["number"] == number].iloc[-1]["selected_ids"]]
    study.save_proposals(number, selected, [value.get(c) for c in selected])
    return out


__all__ = ["MEMBERS", "SHOWN", "STRATEGY", "merge_recorded", "name_cluster", "names_from_store", "naming_cases",
           "open_structure_round", "round_origin", "split_recorded", "structure_batch", "structure_prelabels"]
