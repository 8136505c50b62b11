"""``medwb structure DATA --out DIR``: the structure model of a dataset, before any expert label (issue 13).

Classification: SimCLR on the pool (cached in the study, the same representation the loop uses), clusters of
similar cases in that embedding (:mod:`medwb.al.structure`), written as ``DIR/clusters.csv`` (case_id, cluster,
typicality, rank; one row per pool case) and ``DIR/clusters_summary.csv`` (size, spread, most typical ids). When
the dataset carries its labels (a benchmark), ``DIR/structure_eval.json`` says what a person naming each cluster
from its 8 most typical members would give: the share of the pool whose pre-label is correct, with one naming
action per cluster and no case-level label.

Segmentation: the regions of every case (``DIR/regions/``) and, with masks, what region-click annotation costs
against a manual outline (``DIR/regions_eval.csv``): :mod:`medwb.pipelines.regions`. With ``prelabel`` ("ellipse" or
"vessels", 2D), also a label-free pre-label mask of each of those cases (``DIR/prelabels/``), scored where masks exist.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from medwb.al.regions import RegionConfig
from medwb.errors import ConfigError
from medwb.models.pretrain import PretrainConfig, pretrain_config_on


def run_structure(data: str | Path, out_dir: str | Path, *, n_clusters: int | None = None,
                  study_dir: str | Path | None = None, max_pool: int | None = None,
                  config: PretrainConfig | Mapping[str, float] | None = None, seed: int = 0, shown: int = 8,
                  progress: bool = True, max_cases: int | None = None,
                  regions: RegionConfig | None = None, prelabel: str | None = None,
                  cache_dir: str | Path | None = None) -> dict[str, float]:
    """Build and write the structure model of ``data``; returns the summary (and the evaluation with labels).
    ``max_cases`` limits a segmentation dataset to a seeded subset (the regions of every case otherwise);
    ``regions`` sets its levels and compactness (default :func:`medwb.al.regions.default_region_config`);
    ``prelabel`` (2D segmentation: ``"ellipse"`` or ``"vessels"``) also writes label-free pre-label masks.
    ``cache_dir``: where the SimCLR result is cached (default: the study; a simulation's output folder holds the
    one its arms shared, so the demo clusters without pretraining again)."""
    from medwb.al.loop import study_splits
    from medwb.al.representation import pretrain_build_args, pretrained_embeddings, pretrained_representation
    from medwb.al.structure import cluster_pool, cluster_summary, name_by_typical_members, structure_prelabels
    from medwb.data import open_dataset
    from medwb.data.dataset import default_size
    from medwb.data.splits import SplitArrays
    from medwb.models.networks import build_for_dataset
    from medwb.store import Study

    ds = open_dataset(data, progress=progress)
    config = pretrain_config_on(config, ds)  # --pretrain-* flags: overrides of this network's own schedule
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ds.task == "segmentation":
        from medwb.pipelines.regions import run_regions

        return run_regions(ds, out, Path(study_dir or out / "study"), config=regions, max_cases=max_cases,
                           seed=seed, progress=progress, prelabel=prelabel)
    if ds.task != "classification":
        raise ConfigError(f"{data}: task {ds.task!r} has no structure model; use a classification or "
                          "segmentation dataset")
    if prelabel is not None:  # refused before any pretraining (a classifier's pre-labels are named clusters)
        from medwb.al.prelabels import check_prelabel

        check_prelabel(prelabel, ds)
    with Study.open_or_create(study_dir or out / "study", dataset_path=str(data), task=ds.task,
                              classes=ds.classes, name=ds.name) as study:
        splits = study_splits(study, ds, max_pool=max_pool)
        X, y, ids = SplitArrays(ds, splits, default_size(ds))["train"]
        model_fn = partial(build_for_dataset, ds)
        # what pretrain_study does, on the pool already loaded here (the same cache key, so `medwb pretrain` and
        # the loop share the result)
        res = pretrained_representation(cache_dir or study, X, build_args=pretrain_build_args(model_fn, config),
                                        config=config, progress=progress)
    emb = pretrained_embeddings(model_fn, seed, res, X)
    model = cluster_pool(emb, ids, n_clusters=n_clusters, random_state=seed)
    model.table().to_csv(out / "clusters.csv", index=False)
    summary = cluster_summary(model, emb, shown=shown)
    summary.assign(typical=[" ".join(t) for t in summary["typical"]]).to_csv(out / "clusters_summary.csv",
                                                                            index=False)
    result: dict[str, float] = {"pool": float(len(ids)), "clusters": float(model.n_clusters),
                                "cases_per_cluster": len(ids) / model.n_clusters,
                                "pretrain_seconds": float(res.seconds)}
    y = np.asarray(y).reshape(-1)
    if len(y) and (y >= 0).all():
        truth = dict(zip(ids, y.tolist()))
        names = name_by_typical_members(model, truth.__getitem__, shown=shown)
        pre = structure_prelabels(model, names)
        correct = np.asarray([int(p) == truth[c] for c, p in zip(pre["case_id"], pre["prelabel"])])
        per_class = pd.Series(correct).groupby(y).mean()
        result.update(naming_actions=float(len(names)), correct_share=float(correct.mean()),
                      worst_class_correct=float(per_class.min()), classes_named=float(len(set(names.values()))),
                      n_classes=float(len(ds.classes)))
        (out / "structure_eval.json").write_text(json.dumps(
            {**result, "per_class_correct": {ds.classes.get(int(k), str(k)): float(v) for k, v in per_class.items()},
             "shown_per_cluster": shown}, indent=2))
    return result


def format_structure(result: dict[str, float]) -> str:
    """The summary for the terminal."""
    if "clusters" not in result:
        from medwb.pipelines.regions import format_regions

        return format_regions(result)
    lines = [f"structure model: {int(result['pool'])} pool cases in {int(result['clusters'])} clusters "
             f"({result['cases_per_cluster']:.0f} cases per cluster)"]
    if "correct_share" in result:
        lines.append(f"naming each cluster from its most typical members ({int(result['naming_actions'])} actions, "
                     f"no case-level label): {100 * result['correct_share']:.1f}% of the pool pre-labelled "
                     f"correctly; worst class {100 * result['worst_class_correct']:.1f}%; "
                     f"{int(result['classes_named'])} of {int(result['n_classes'])} classes named")
    return "\n".join(lines)


__all__ = ["format_structure", "run_structure"]
