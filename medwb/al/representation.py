"""The pretrained representation of the active-learning pool: computed once, cached in the study, reused.

Why here: every round of the loop trains on the labelled cases only; self-supervised pretraining
(:mod:`medwb.models.pretrain`, SimCLR) puts the whole unlabelled pool to work. This module owns the one rule for
*when* it runs and *where* its result lives: keyed by the pool images' hash, the network's build arguments and
the pretraining config (:func:`medwb.models.pretrain.pretrain_key`), kept at
``StudyLayout.pretrained(key)`` (``cache/pretrain/<key>.pt``), resumable from ``cache/pretrain/<key>.partial.pt``
after a crash, saved as final only when every epoch ran. The loop (``ActiveLearningLoop(pretrain=True)``),
``medwb pretrain`` and ``medwb simulate --pretrain`` all go through :func:`pretrained_representation`.

How the loop uses it: the cold start ranks the pool in the pretrained trunk's embedding (instead of pixel PCA);
every round builds its network, loads the pretrained trunk and trains the head only (``finetune="head"``,
:attr:`medwb.models.TrainConfig.freeze_trunk`) or everything (``"full"``); core-set / BADGE / hybrid use that
round's trunk, so they see the pretrained embedding too.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medwb.errors import ConfigError, DataError

if TYPE_CHECKING:
    from torch import nn

    from medwb.data.case_images import Images
    from medwb.data.dataset import Dataset
    from medwb.models import TrainConfig
    from medwb.models.pretrain import PretrainConfig, PretrainResult
    from medwb.store import Study

#: how a round uses the pretrained trunk: train the dropout head only (trunk frozen) or fine-tune everything
FINETUNE_MODES = ("head", "full")

def uses_pretraining(task: str, ndim: int, pretrain: bool | None) -> bool:
    """Whether a loop pretrains on its pool and starts every round from that trunk (the cold start then ranks in
    its embedding): as asked, and for ``None`` (the default) everywhere but 2D segmentation. There the SimCLR
    trunk made rounds worse: HC18 (128 px), fixed 16-image label sets, test Dice 0.829 against 0.842 from scratch
    (benchmarks/active_learning/hc18_fixed_sets); in the loop (20% in 4 rounds, 3 seeds) random picking on the
    pretrained trunk ended at 0.885 against random + scratch 0.907 (benchmarks/active_learning/hc18). 3D
    segmentation keeps it: on hippocampus it was level (0.831 against 0.830, hippocampus_medwb_wide)."""
    if pretrain is None:
        return not (task == "segmentation" and int(ndim) == 2)
    return bool(pretrain)


def check_finetune(finetune: str) -> str:
    if finetune not in FINETUNE_MODES:
        raise ConfigError(f"finetune={finetune!r} is not a fine-tuning mode; use one of {', '.join(FINETUNE_MODES)}")
    return finetune


def _layout(study: Study | str | Path) -> Any:
    from medwb.store.layout import StudyLayout

    return getattr(study, "layout", None) or StudyLayout(study)


def pretrained_representation(study: Study | str | Path, X_pool: Images, *, build_args: Mapping[str, Any],
                              config: PretrainConfig | None = None, data_hash: str | None = None,
                              progress: bool = True, workers: int = 0) -> PretrainResult:
    """The pretraining result of ``X_pool`` for a network of ``build_args``: loaded from the study's cache when
    it holds the result for :func:`~medwb.models.pretrain.pretrain_key` (no training), else pretrained (resuming
    a partial run of the same key) and saved there when ``completed`` (a ``max_seconds`` stop leaves only the
    resumable partial file, so the next call continues it).

    ``study``: a :class:`~medwb.store.Study` or any folder (the simulation caches under its output folder).
    ``data_hash``: a stable hash of the pool images; default :func:`~medwb.models.pretrain.data_fingerprint`
    of ``X_pool`` (dtype, shape and bytes: the input size is part of it). ``X_pool`` may be streamed
    (:class:`~medwb.data.case_images.CaseImages`; ``workers`` read its batches ahead): same key, same result.
    """
    from medwb.models.pretrain import (data_fingerprint, default_pretrain_config, load_pretrained, pretrain,
                                       pretrain_key, save_pretrained)

    config = config or default_pretrain_config(build_args)
    data_hash = data_hash or data_fingerprint(X_pool)
    key = pretrain_key(data_hash, build_args, config)
    layout = _layout(study)
    final, partial = layout.pretrained(key), layout.pretrain_partial(key)
    if final.is_file():
        res = load_pretrained(final)
        res.config = dataclasses.replace(res.config, max_seconds=config.max_seconds)
        return res
    final.parent.mkdir(parents=True, exist_ok=True)
    res = pretrain(dict(build_args), X_pool, config=config, progress=progress, checkpoint=partial,
                   workers=workers, data_hash=data_hash)
    if res.completed:
        save_pretrained(res, final)
        partial.unlink(missing_ok=True)
    return res


def cached_key(result: PretrainResult, X_pool: Images, data_hash: str | None = None) -> str:
    """The cache key of ``result`` for this pool (where :func:`pretrained_representation` keeps it)."""
    from medwb.models.pretrain import data_fingerprint, pretrain_key

    return pretrain_key(data_hash or data_fingerprint(X_pool), result.build_args, result.config)


def with_pretrained(model: nn.Module, pretrained: PretrainResult | str | Path | None) -> nn.Module:
    """``model`` with the pretrained trunk loaded (in place); unchanged without ``pretrained``."""
    if pretrained is None:
        return model
    from medwb.models.pretrain import init_from_pretrained

    return init_from_pretrained(model, pretrained)  # type: ignore[arg-type]


#: ``finetune="head"``: at least this many batches per epoch (unless the config asks for more)
HEAD_MIN_BATCHES = 8


def finetune_config(config: TrainConfig, finetune: str) -> TrainConfig:
    """The round's schedule for a pretrained network: ``full`` trains everything with ``config``; ``head``
    freezes the trunk and trains the head with at least :data:`HEAD_MIN_BATCHES` batches per epoch: on cached
    features a step costs next to nothing, and one batch per epoch left the linear head under-trained (best epoch =
    the last; PneumoniaMNIST, 1000-case pool, one draw: test AUC 0.893 -> 0.915 at 20 labels, 0.936 -> 0.939 at
    100)."""
    if check_finetune(finetune) == "full":
        return dataclasses.replace(config, freeze_trunk=False)
    return dataclasses.replace(config, freeze_trunk=True,
                               min_batches_per_epoch=max(int(config.min_batches_per_epoch), HEAD_MIN_BATCHES))


def pretrained_embeddings(model_fn: Callable[[int], nn.Module], seed: int,
                          pretrained: PretrainResult | str | Path, X: np.ndarray) -> np.ndarray:
    """Features (N, F) of ``X`` from the pretrained trunk, L2-normalised (the contrastive objective compares
    directions, so cosine geometry is the one it learned): the cold start's embedding."""
    from medwb.models import embed

    f = embed(with_pretrained(model_fn(seed), pretrained), X)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def pretrain_build_args(model_fn: Callable[[int], nn.Module], config: PretrainConfig | None) -> dict[str, Any]:
    """The network pretraining uses: ``model_fn(config.seed)``, so the result is the same for every loop seed
    (rounds load its trunk into their own ``model_fn(seed)``; the head and init seed may differ)."""
    from medwb.models.pretrain import PretrainConfig

    model = model_fn(int((config or PretrainConfig()).seed))
    args = getattr(model, "build_args", None)
    if not isinstance(args, dict):
        raise DataError(None, "pretraining needs a medwb network (build_classifier / build_segmenter)",
                        "pass a model_fn that returns one, or pretrain=False")
    return dict(args)


def pretrain_study(study: Study, dataset: Dataset, *, config: PretrainConfig | None = None,
                   size: tuple[int, ...] | None = None, max_pool: int | None = None,
                   pool_ids: Iterable[str] | None = None, progress: bool = True, stream: bool = False,
                   workers: int = 0) -> tuple[PretrainResult, Path]:
    """``medwb pretrain``: the study's splits (carved and saved exactly like the loop does for a new study), the
    pool at the loop's input size, and :func:`pretrained_representation` on it with the dataset's default
    network. ``stream``: the pool is read batch by batch from its files (``workers`` processes ahead) and never
    held whole; the cache key and the weights are those of the in-memory run. Returns (result, cache file; the
    partial checkpoint when the run stopped early)."""
    from medwb.al.loop import study_splits
    from medwb.data.case_images import CaseImages
    from medwb.data.dataset import default_size
    from medwb.data.splits import SplitArrays
    from medwb.models.networks import build_for_dataset
    from medwb.models.pretrain import data_fingerprint

    splits = study_splits(study, dataset, pool_ids=pool_ids, max_pool=max_pool)
    size = tuple(size) if size is not None else default_size(dataset)
    X = CaseImages(dataset, splits["train"], size) if stream else SplitArrays(dataset, splits, size)["train"][0]
    args = pretrain_build_args(lambda s: build_for_dataset(dataset, seed=s), config)
    data_hash = data_fingerprint(X)
    res = pretrained_representation(study, X, build_args=args, config=config, progress=progress,
                                    workers=workers, data_hash=data_hash)
    key = cached_key(res, X, data_hash)
    return res, (_layout(study).pretrained(key) if res.completed else _layout(study).pretrain_partial(key))


def format_pretrain_summary(result: PretrainResult, path: Path) -> str:
    """A few lines for the terminal: where it is cached, epochs, time, loss curve."""
    h = result.history
    state = "complete" if result.completed else f"stopped early: {result.epochs_done}/{result.epochs_planned} epochs"
    lines = [f"pretrained representation ({state}): {path}",
             f"SimCLR, {result.epochs_done} epoch(s), {result.seconds:.1f} s"]
    if h:
        loss = " ".join(f"{r['loss']:.2f}" for r in h)
        lines.append(f"loss by epoch: {loss} (normalised {h[0]['loss_norm']:.2f} -> {h[-1]['loss_norm']:.2f}; "
                     f"chance 1.00); positive-pair accuracy {h[0]['pos_acc']:.2f} -> {h[-1]['pos_acc']:.2f}")
    else:
        lines.append("loaded from the cache (no epoch ran in this call)")
    return "\n".join(lines)
