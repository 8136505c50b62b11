"""Fast Monte-Carlo dropout: T stochastic passes batched into one forward, or a trunk-once fast path.

MC dropout (Gal & Ghahramani 2016) keeps dropout active at inference and reads the spread of T predictions
as model (epistemic) uncertainty. Normalisation layers stay in eval mode. Every dropout flavour PyTorch has is
switched on: ``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout`` and ``FeatureAlphaDropout`` (baal's
``MCDropoutModule`` patches only ``Dropout`` and ``Dropout2d``, so MONAI 3D blocks, which use ``Dropout3d``,
silently become deterministic there).

Two ways to sample:

* ``fast=False`` (full MC dropout): each batch is repeated T times along the batch axis and run once through
  the whole network with every dropout layer active -> T samples from the full MC-dropout posterior.
* ``fast=True`` (default when the model has ``.trunk`` and ``.head``, as ``medwb.models`` builds them): the
  trunk runs once in eval mode, its features are repeated T times and only the head (dropout + linear / 1x1
  conv) is sampled (a segmenter's dropout + 1x1 conv head without the copies: each pass's channel mask scales
  the conv's weights instead of the feature maps). This is MC dropout over the head's dropout only, i.e. a
  last-layer Bayesian approximation.
  When the trunk has no dropout -- how medwb's networks are built -- it is *exactly* full MC dropout (same
  distribution; with the same seed and batch size, the same samples), at ~1x the cost of a plain pass. If a
  trunk does contain dropout, the fast path ignores it (and warns): its samples then show less spread.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medwb.errors import DataError
from medwb.models.train import device_of, embed, pooled_features

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)
_EPS = 1e-12
SCORE_KINDS = ("entropy", "least_confidence", "margin", "bald", "variance", "mean_std")


def dropout_modules(module: nn.Module) -> list[nn.Module]:
    """All dropout layers (any dimensionality) with p > 0 inside ``module``."""
    return [m for m in module.modules() if isinstance(m, DROPOUT_TYPES) and float(getattr(m, "p", 0.0)) > 0]


@contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode everywhere (BatchNorm uses running stats) except dropout layers, which sample; restored on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in dropout_modules(model):
        m.train()
    try:
        yield model
    finally:
        for m, was in modes.items():
            m.train(was)


def has_fast_path(model: nn.Module) -> bool:
    """True when the model splits into ``trunk`` + ``head`` with dropout in the head."""
    trunk, head = getattr(model, "trunk", None), getattr(model, "head", None)
    return isinstance(trunk, nn.Module) and isinstance(head, nn.Module) and bool(dropout_modules(head))


def _t_chunk(passes: int, batch: int, per_sample: int, budget: int = 2 ** 24) -> int:
    """How many of the T passes go into one forward: all of them unless the activations would be huge."""
    return int(max(1, min(passes, budget // max(1, batch * per_sample))))


def default_batch(passes: int, per_sample: int, fast: bool) -> int:
    """Images per forward: ~256 28x28 images (as ``predict_proba``) -- larger batches measured slower on CPU
    (cache); the full path puts T copies of each image in the forward, so it takes T times fewer images."""
    base = int(max(1, min(256, 2 ** 21 // per_sample)))
    return base if fast else max(1, base // passes)


def _dropout_conv_head(head: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(dropout, conv) when ``head`` is exactly a segmenter's channel dropout + 1x1 convolution (as
    ``build_segmenter`` makes it), else None: the head :func:`_sample_conv_head` can sample without copying the
    features T times."""
    if not (isinstance(head, nn.Sequential) and len(head) == 2):
        return None
    drop, conv = head[0], head[1]
    spatial = {nn.Dropout2d: nn.Conv2d, nn.Dropout3d: nn.Conv3d}.get(type(drop))
    if spatial is None or type(conv) is not spatial or conv.groups != 1 or any(k != 1 for k in conv.kernel_size) \
            or any(s != 1 for s in conv.stride) or any(p != 0 for p in conv.padding):
        return None
    return drop, conv


def _sample_conv_head(drop: nn.Module, conv: nn.Module, feats: torch.Tensor, t: int) -> torch.Tensor:
    """``t`` MC samples of channel dropout + 1x1 conv on ``feats`` (B, C, ...), as logits (t * B, K, ...): the
    same as the head on ``feats`` repeated ``t`` times, dropout masks included (the mask of each (sample,
    channel) is drawn by the dropout layer itself, on a tensor of the same batch and channels), but the mask
    scales the conv's weights (K x C per sample) instead of the features, so the C-channel feature maps are never
    copied t times (with the round's other savings, hybrid's inputs for HC18's 155 images at 128 x 128 in 2.6 s
    against 9.5 s: benchmarks/uncertainty/seg_scoring_hc18.md)."""
    b, c = feats.shape[:2]
    mask = drop(feats.new_ones(t * b, c, *([1] * (feats.ndim - 2)))).reshape(t, b, 1, c)
    weight = (conv.weight.reshape(1, 1, -1, c) * mask).transpose(0, 1).reshape(b, -1, c)  # (B, t * K, C)
    out = torch.bmm(weight, feats.flatten(2)).reshape(b, t, -1, feats[0, 0].numel())  # one product per image
    if conv.bias is not None:
        out = out + conv.bias.reshape(1, 1, -1, 1)
    return out.transpose(0, 1).reshape(t * b, -1, *feats.shape[2:])


def _iter_mc_batches(model: nn.Module, X: np.ndarray, passes: int, fast: bool, seed: int,
                     batch_size: int | None, progress: bool
                     ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Yield (start index, probs of shape (T, B, K, ...), the batch's trunk features) per batch, under one seeded
    RNG stream. Features: the fast path's trunk output (None on the full path, which has no separate trunk
    pass), for a caller that also wants the embeddings (:func:`mc_dropout_and_embeddings`)."""
    X = np.asarray(X)
    if X.ndim < 3:
        raise DataError(None, f"X has shape {X.shape}, expected (N, C, H, W[, D])", "pass channel-first images")
    if passes < 1:
        raise DataError(None, f"passes={passes}", "use passes >= 1 (20 is typical)")
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    per_sample = int(np.prod(X.shape[1:]))
    if fast and not has_fast_path(model):
        fast = False  # no trunk/head split (or no head dropout): only full MC dropout is meaningful
    elif fast and dropout_modules(model.trunk):
        warnings.warn("the model's trunk contains dropout; the fast MC path samples only the head's dropout "
                      "(last-layer approximation) -- use fast=False for full MC dropout", stacklevel=3)
    bs = batch_size or default_batch(passes, per_sample, fast)
    dev = device_of(model)  # batches go to the model's device, probabilities come back to the CPU
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.no_grad(), \
            mc_dropout_mode(model):
        torch.manual_seed(seed)
        conv_head = _dropout_conv_head(model.head) if fast else None
        if fast:
            model.trunk.eval()  # the deterministic part runs once, dropout (if any) off
        for i in tqdm(range(0, len(Xt), bs), desc=f"MC dropout T={passes}", disable=not progress, leave=False):
            xb = Xt[i:i + bs].to(dev)
            b = len(xb)
            tc = _t_chunk(passes, b, per_sample)
            feats = model.trunk(xb) if fast else None
            outs = []
            for t0 in range(0, passes, tc):
                t = min(tc, passes - t0)
                if fast and conv_head is not None:
                    logits = _sample_conv_head(*conv_head, feats, t)
                elif fast:
                    logits = model.head(feats.repeat(t, *([1] * (feats.ndim - 1))))
                else:
                    logits = model(xb.repeat(t, *([1] * (xb.ndim - 1))))
                outs.append(torch.softmax(logits, 1).reshape(t, b, *logits.shape[1:]))
            yield i, torch.cat(outs, 0).cpu(), feats


def mc_dropout_proba(model: nn.Module, X: np.ndarray, *, passes: int = 20, fast: bool = True, seed: int = 0,
                     batch_size: int | None = None, progress: bool = False) -> np.ndarray:
    """MC-dropout softmax samples, float32 of shape (T, N, K) or (T, N, K, H, W[, D]).

    Deterministic for a given ``seed``, ``batch_size`` and thread count; the global torch RNG is untouched.
    For segmentation pools prefer :func:`mc_uncertainty_maps`, which does not keep all T maps in memory.
    """
    parts = [p.numpy() for _, p, _ in _iter_mc_batches(model, X, passes, fast, seed, batch_size, progress)]
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def mc_dropout_and_embeddings(model: nn.Module, X: np.ndarray, *, passes: int = 20, seed: int = 0,
                              batch_size: int | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mc_dropout_proba` (fast path) and the images' embeddings (:func:`medwb.models.embed`: trunk
    features, averaged over space for a segmenter) from the same trunk pass: a round that ranks by uncertainty and
    diversity (hybrid, core-set) runs the trunk over its pool once, not twice. A model without the fast path gets
    its embeddings from :func:`~medwb.models.embed`."""
    mc, emb = [], []
    for _, p, feats in _iter_mc_batches(model, X, passes, True, seed, batch_size, progress):
        mc.append(p.numpy())
        emb.append(None if feats is None else pooled_features(feats).cpu().numpy())
    if any(e is None for e in emb):
        return np.concatenate(mc, axis=1).astype(np.float32, copy=False), embed(model, X)
    return np.concatenate(mc, axis=1).astype(np.float32, copy=False), np.concatenate(emb).astype(np.float32)


# --------------------------------------------------------------------------------------------- measures
def entropy(probs: np.ndarray, axis: int = 1) -> np.ndarray:
    """Shannon entropy (nats) over the class axis."""
    p = np.clip(probs, _EPS, 1.0)
    return -(probs * np.log(p)).sum(axis=axis)


def score_map(kind: str, *, probs: np.ndarray | None = None, mc_probs: np.ndarray | None = None) -> np.ndarray:
    """Uncertainty per sample (N,) or per voxel (N, H, W[, D]); higher = more uncertain.

    kinds: ``entropy`` (predictive entropy of the mean), ``least_confidence`` (1 - max p), ``margin``
    (1 - (p_top1 - p_top2)), ``bald`` (mutual information H[mean] - mean H, needs ``mc_probs``),
    ``variance`` (class-averaged variance over passes), ``mean_std`` (class-averaged std over passes).
    ``probs`` is (N, K, ...); ``mc_probs`` is (T, N, K, ...); given only ``mc_probs``, probs = its mean.
    """
    if kind not in SCORE_KINDS:
        raise DataError(None, f"unknown uncertainty kind {kind!r}", f"use one of {', '.join(SCORE_KINDS)}")
    if probs is None:
        if mc_probs is None:
            raise DataError(None, f"uncertainty '{kind}' needs probabilities", "pass probs= or mc_probs=")
        probs = np.asarray(mc_probs).mean(0)
    probs = np.asarray(probs, dtype=np.float64)
    if kind == "entropy":
        return entropy(probs, 1)
    if kind == "least_confidence":
        return 1.0 - probs.max(1)
    if kind == "margin":
        top2 = np.sort(probs, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    if mc_probs is None:
        raise DataError(None, f"uncertainty '{kind}' needs MC-dropout samples",
                        "pass mc_probs=medwb.models.uncertainty.mc_dropout_proba(model, X)")
    mc = np.asarray(mc_probs, dtype=np.float64)
    if kind == "bald":
        return np.maximum(entropy(probs, 1) - entropy(mc, 2).mean(0), 0.0)
    if kind == "variance":
        return mc.var(0).mean(1)
    return mc.std(0).mean(1)  # mean_std


def reduce_voxel_scores(score_map: np.ndarray, *, how: str = "mean", k_percent: float = 5.0,
                        foreground_mask: np.ndarray | None = None) -> np.ndarray:
    """Reduce a per-voxel score map (N, H, W[, D]) to one score per image (N,).

    ``mean``: average over the image (favours images with much uncertain area); ``topk``: mean of the top
    ``k_percent`` % voxels (the most uncertain region, independent of organ size); ``foreground``: mean over
    ``foreground_mask`` (e.g. the predicted foreground: boundary uncertainty of the structure itself; an
    image with an empty mask falls back to its top-k score, so a missed structure still scores high).
    """
    s = np.asarray(score_map, dtype=np.float64)
    if s.ndim < 2:
        return s
    flat = s.reshape(len(s), -1)
    if how == "mean":
        return flat.mean(1)
    n_top = max(1, int(round(flat.shape[1] * k_percent / 100.0)))
    topk = np.partition(flat, flat.shape[1] - n_top, axis=1)[:, flat.shape[1] - n_top:].mean(1)
    if how == "topk":
        return topk
    if how == "foreground":
        if foreground_mask is None:
            raise DataError(None, "reduce 'foreground' needs a foreground mask",
                            "pass foreground_mask= (e.g. probs.argmax(1) > 0) or use how='mean'/'topk'")
        m = np.asarray(foreground_mask, dtype=bool).reshape(len(s), -1)
        if m.shape != flat.shape:
            raise DataError(None, f"foreground mask shape {np.shape(foreground_mask)} does not match scores "
                            f"{s.shape}", "pass one mask voxel per score voxel")
        cnt = m.sum(1)
        fg = np.where(cnt > 0, (flat * m).sum(1) / np.maximum(cnt, 1), topk)
        return fg
    raise DataError(None, f"unknown voxel reduction {how!r}", "use 'mean', 'topk' or 'foreground'")


MAP_KINDS = ("entropy", "bald", "variance", "mean_std")


def mc_uncertainty_maps(model: nn.Module, X: np.ndarray, *, passes: int = 20, fast: bool = True, seed: int = 0,
                        batch_size: int | None = None, kinds: tuple[str, ...] = MAP_KINDS,
                        progress: bool = False) -> dict[str, np.ndarray]:
    """Per-voxel (or per-sample) uncertainty maps, streamed batch by batch (T maps never all in memory).

    Returns ``{"mean": (N, K, ...) mean probabilities, kind: (N, ...) map for each kind}``. For a segmenter
    built by ``build_segmenter`` the fast path samples the decoder head's ``Dropout2d/3d`` once per pass.
    """
    out: dict[str, list[np.ndarray]] = {"mean": [], **{k: [] for k in kinds}}
    for _, p, _ in _iter_mc_batches(model, X, passes, fast, seed, batch_size, progress):
        mc = p.numpy()
        mean = mc.mean(0)
        out["mean"].append(mean.astype(np.float32))
        for k in kinds:
            out[k].append(score_map(k, probs=mean, mc_probs=mc).astype(np.float32))
    return {k: np.concatenate(v) for k, v in out.items()}
