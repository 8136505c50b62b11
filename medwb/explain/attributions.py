"""Attribution maps for 2D/3D MONAI classifiers and segmenters, one call shape for every method.

``attribute(model, X, target=None, *, method=..., batch_size=..., progress=True) -> np.ndarray`` returns a
float32 map of shape (N, 1, H, W[, D]) -- the input's size, one channel -- so overlays, sanity checks and
NIfTI export never care which method made it. Grad-CAM / Grad-CAM++ come from ``monai.visualize``,
Integrated Gradients / Occlusion / Saliency from Captum; we only add what they lack for this project:

* a default target layer found generically (the last convolution of the trunk for classifiers, the
  lowest-resolution convolution -- the bottleneck -- for segmenters), so any MONAI net works;
* per-sample targets in a batch (MONAI's hook wrapper scores ``logits[:, idx]`` which mixes samples when
  ``idx`` is a vector, and Grad-CAM++ broadcasts the score against the wrong axis);
* segmentation: the region wrapper of Captum's segmentation tutorial (sum of a class's logits over the
  voxels the model currently predicts as that class), so every classifier method applies to segmenters;
* hooks are removed afterwards and in-place activations are switched off only while attributing, so the
  caller's model is left exactly as it was.

Sign convention: Grad-CAM(++) and saliency are >= 0; IG and occlusion are signed (positive = evidence
for the target class). CAMs are scaled per sample to max 1 (the usual display convention).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from medwb.errors import DataError

METHOD_NAMES: tuple[str, ...] = ("gradcam", "gradcampp", "ig", "occlusion", "saliency")
SIGNED_METHODS: frozenset[str] = frozenset({"ig", "occlusion"})
ALIASES: dict[str, str] = {
    "grad-cam": "gradcam", "grad_cam": "gradcam", "grad-cam++": "gradcampp", "gradcam++": "gradcampp",
    "integrated_gradients": "ig", "integratedgradients": "ig", "integrated-gradients": "ig",
}


# ----------------------------------------------------------------------------------------------------- helpers
def canonical_method(method: str) -> str:
    """Accept common spellings (``Grad-CAM++``, ``integrated_gradients``) and return the canonical name."""
    m = ALIASES.get(method.lower(), method.lower())
    if m not in METHOD_NAMES:
        raise DataError(None, f"unknown attribution method {method!r}", f"use one of {', '.join(METHOD_NAMES)}")
    return m


def as_tensor(X: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float (N,C,H,W[,D]) tensor of a batch of images; DataError with the fix for any other shape.

    Shared by the attribution methods and the checks so both accept and reject the same inputs.
    """
    t = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).float()
    if t.ndim not in (4, 5):
        raise DataError(None, f"input has shape {tuple(t.shape)}, expected (N,C,H,W) or (N,C,H,W,D)",
                        "pass a batch of channel-first images, e.g. ds.arrays(...)[0] or X[None] for one image")
    return t


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def batches(n: int, batch_size: int, progress: bool, desc: str) -> Iterator[slice]:
    """Slices of ``range(n)`` of at most ``batch_size``, with a tqdm bar when ``progress`` and more than one."""
    from tqdm.auto import tqdm

    starts = range(0, n, max(1, int(batch_size)))
    for s in tqdm(starts, desc=desc, disable=not progress or n <= batch_size, leave=False):
        yield slice(s, min(n, s + batch_size))


@contextlib.contextmanager
def prepared(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, no in-place activations and no leftover hooks while attributing; restored afterwards.

    MONAI's ``ModelWithHooks`` registers hooks it never removes, and full backward hooks fail on a
    module whose output a later in-place ReLU rewrites, so both are handled here once.
    """
    was_training = model.training
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    hooks = {m: (set(m._forward_hooks), set(m._backward_hooks)) for m in model.modules()}
    for m in inplace:
        m.inplace = False
    model.eval()
    try:
        yield model
    finally:
        for m, (fw, bw) in hooks.items():
            for k in set(m._forward_hooks) - fw:
                del m._forward_hooks[k]
            for k in set(m._backward_hooks) - bw:
                del m._backward_hooks[k]
        for m in inplace:
            m.inplace = True
        model.train(was_training)


@torch.no_grad()
def forward_logits(model: nn.Module, X: np.ndarray | torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """Raw model output in eval mode, batched (logits (N,K) or (N,K,H,W[,D]))."""
    x = as_tensor(X)
    dev = _device(model)
    was = model.training
    model.eval()
    try:
        outs = [model(x[s].to(dev)).float().cpu() for s in batches(len(x), batch_size, False, "")]
    finally:
        model.train(was)
    return torch.cat(outs)


def is_segmenter(model: nn.Module, X: np.ndarray | torch.Tensor) -> bool:
    """A network whose output keeps the spatial axes is treated as a segmenter."""
    return forward_logits(model, as_tensor(X)[:1]).ndim > 2


class SegmentationRegion(nn.Module):
    """Turn a segmenter into an (N, K) "classifier": score_k = sum of class-k logits over the voxels the
    model currently labels k (Captum's segmentation-tutorial wrapper, any number of spatial dims).

    The argmax mask is recomputed on every (perturbed) input, as in the tutorial, so occlusion and
    IG measure how the evidence for the predicted region changes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        sel = torch.zeros_like(out).scatter_(1, out.argmax(dim=1, keepdim=True), 1.0)
        return (out * sel).flatten(2).sum(-1)


def _resolve_targets(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | np.ndarray | None,
                     segmentation: bool, batch_size: int) -> torch.Tensor:
    """Per-sample class indices: the given ones, else the predicted class (segmentation: the
    foreground class with the largest predicted area, class 1 when nothing is predicted)."""
    n = len(x)
    if target is not None:
        t = torch.as_tensor(np.asarray(target)).long().view(-1)
        return t.expand(n).clone() if t.numel() == 1 else t
    logits = forward_logits(model, x, batch_size=batch_size)
    if not segmentation:
        return logits.argmax(1)
    k = logits.shape[1]
    pred = logits.argmax(1).flatten(1)
    counts = torch.stack([(pred == c).sum(1) for c in range(k)], 1)
    if k > 1:
        counts[:, 0] = -1
    return counts.argmax(1).clamp(min=1 if k > 1 else 0)


# ------------------------------------------------------------------------------------------------ target layer
def _conv_modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    return [(f"{prefix}{n}", m) for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]


def _lift_to_block(model: nn.Module, name: str) -> str:
    """Prefer the outermost enclosing MONAI ``Convolution`` / ``ResidualUnit`` block (conv + norm +
    activation [+ skip]) so the hook sees the activated feature map Grad-CAM is defined on."""
    from monai.networks.blocks import Convolution, ResidualUnit

    mods = dict(model.named_modules())
    parts = name.split(".")
    best = name
    for i in range(len(parts) - 1, 0, -1):
        anc = ".".join(parts[:i])
        m = mods.get(anc)
        if isinstance(m, (Convolution, ResidualUnit)):
            best = anc
        elif isinstance(m, nn.Sequential) and isinstance(mods.get(".".join(parts[: i - 1])), ResidualUnit):
            continue  # the conv path inside a residual unit
        else:
            break
    return best


def default_target_layer(model: nn.Module, X: np.ndarray | torch.Tensor | None = None) -> str:
    """Name of the layer Grad-CAM hooks by default.

    Classifier: the last convolution of ``model.trunk`` when the model has one (the medwb builders do),
    else the last non-transposed convolution of the whole net. Segmenter (needs ``X`` to tell): the last
    of the convolutions with the smallest output size -- the bottleneck, where features are most semantic.
    """
    segmentation = X is not None and is_segmenter(model, X)
    if segmentation:
        convs = [(n, m) for n, m in _conv_modules(model) if not isinstance(m, nn.modules.conv._ConvTransposeNd)]
        sizes: dict[str, int] = {}
        handles = [m.register_forward_hook(lambda _m, _i, o, n=n: sizes.__setitem__(n, int(np.prod(o.shape[2:]))))
                   for n, m in convs]
        try:
            forward_logits(model, as_tensor(X)[:1])
        finally:
            for h in handles:
                h.remove()
        if not sizes:
            raise DataError(None, "the segmenter has no convolution layer", "pass layer=... explicitly")
        smallest = min(sizes.values())
        name = [n for n, _ in convs if sizes.get(n) == smallest][-1]
        return _lift_to_block(model, name)
    trunk = getattr(model, "trunk", None)
    name = (_last_conv_block(model, trunk, "trunk.") if isinstance(trunk, nn.Module)
            else _last_conv_block(model, model, ""))
    if name is None:
        raise DataError(None, f"{type(model).__name__} has no convolution layer for Grad-CAM",
                        "use method='ig', 'occlusion' or 'saliency', or pass layer=NAME")
    return name


def _last_conv_block(model: nn.Module, part: nn.Module, prefix: str) -> str | None:
    """The block (:func:`_lift_to_block`) around the last non-transposed convolution of ``part`` (named
    ``prefix`` inside ``model``); None when it has none."""
    convs = [n for n, m in _conv_modules(part, prefix) if not isinstance(m, nn.modules.conv._ConvTransposeNd)]
    return _lift_to_block(model, convs[-1]) if convs else None


# ------------------------------------------------------------------------------------------------------ methods
def _normalize_per_sample(a: torch.Tensor) -> torch.Tensor:
    flat = a.flatten(1)
    mx = flat.max(1).values.clamp(min=1e-12)
    return (flat / mx[:, None]).view_as(a)


def member_target_layers(model: nn.Module) -> list[str]:
    """Grad-CAM's default layer in each member of an ensemble (``medwb.models.build_ensemble``): the last
    convolution of each member's trunk; empty for any other network."""
    trunks = getattr(getattr(model, "trunk", None), "members", None)
    if getattr(model, "build_args", {}).get("kind") != "ensemble" or trunks is None:
        return []
    names = [_last_conv_block(model, t, f"trunk.members.{i}.") for i, t in enumerate(trunks)]
    return [n for n in names if n is not None]


def _cam(model: nn.Module, X: np.ndarray | torch.Tensor, target=None, *, plus: bool, batch_size: int,
         progress: bool, layer: str | None) -> np.ndarray:
    """Grad-CAM(++) maps at ``layer``; an ensemble without a ``layer`` gets the mean of its members' maps (each at
    its own trunk's last convolution, each normalised per sample), so every member's evidence is shown."""
    members = [] if layer is not None else member_target_layers(model)
    if len(members) > 1:
        maps = [_cam(model, X, target, plus=plus, batch_size=batch_size, progress=progress, layer=name)
                for name in members]
        return _normalize_per_sample(torch.from_numpy(np.mean(maps, axis=0))).numpy().astype(np.float32)
    from monai.visualize import GradCAM, GradCAMpp
    from monai.visualize.class_activation_maps import ModelWithHooks

    x = as_tensor(X)
    seg = is_segmenter(model, x)
    net = SegmentationRegion(model) if seg else model
    if layer is None:
        layer = default_target_layer(model, x if seg else None)
    full_layer = f"model.{layer}" if seg else layer
    targets = _resolve_targets(model, x, target, seg, batch_size)
    spatial = x.ndim - 2

    class _PerSample(ModelWithHooks):
        """Score = each sample's own target logit, shaped (B,1,1..) so Grad-CAM++ broadcasts per sample."""

        def class_score(self, logits: torch.Tensor, class_idx) -> torch.Tensor:  # type: ignore[override]
            idx = torch.as_tensor(class_idx, device=logits.device).long().view(-1, 1)
            return logits.gather(1, idx).view(-1, 1, *([1] * spatial))

        def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
            out = super().__call__(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
            # Grad-CAM++ multiplies by exp(score): a per-sample constant that the per-sample normalization
            # removes anyway, but which overflows for region scores (sums over many voxels) -> NaN.
            self.score = torch.zeros_like(self.score)
            return out

    dev = _device(model)
    out = []
    with prepared(net):
        hooked = _PerSample(net, full_layer, register_forward=True, register_backward=True)
        if not any(n == full_layer for n, _ in net.named_modules()):
            raise DataError(None, f"layer {layer!r} not found in {type(model).__name__}",
                            "pass the name of a convolution from model.named_modules()")
        cls = GradCAMpp if plus else GradCAM
        cam = cls(nn_module=hooked, target_layers=full_layer, postprocessing=lambda t: t)
        for s in batches(len(x), batch_size, progress, "Grad-CAM++" if plus else "Grad-CAM"):
            xb = x[s].to(dev).requires_grad_(True)
            m = cam(xb, class_idx=targets[s].to(dev))
            out.append(_normalize_per_sample(m.detach().float().cpu()))
    return torch.cat(out).numpy().astype(np.float32)


def gradcam(model: nn.Module, X, target=None, *, batch_size: int = 64, progress: bool = True,
            layer: str | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) via ``monai.visualize.GradCAM``; >= 0, max 1 per sample."""
    return _cam(model, X, target, plus=False, batch_size=batch_size, progress=progress, layer=layer)


def gradcampp(model: nn.Module, X, target=None, *, batch_size: int = 64, progress: bool = True,
              layer: str | None = None) -> np.ndarray:
    """Grad-CAM++ (Chattopadhyay et al. 2018) via ``monai.visualize.GradCAMpp``; >= 0, max 1 per sample."""
    return _cam(model, X, target, plus=True, batch_size=batch_size, progress=progress, layer=layer)


def _captum(model: nn.Module, X, target, *, batch_size: int, progress: bool, desc: str,
            run: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
            reduce: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    x = as_tensor(X)
    seg = is_segmenter(model, x)
    net = SegmentationRegion(model) if seg else model
    targets = _resolve_targets(model, x, target, seg, batch_size)
    dev = _device(model)
    out = []
    with prepared(net):
        for s in batches(len(x), batch_size, progress, desc):
            a = run(net, x[s].to(dev), targets[s].to(dev))
            out.append(reduce(a.detach().float().cpu()))
    return torch.cat(out).numpy().astype(np.float32)


def integrated_gradients(model: nn.Module, X, target=None, *, batch_size: int = 16, progress: bool = True,
                         n_steps: int = 32, baseline: float = 0.0) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017, Captum) from a constant ``baseline`` image; signed,
    channels summed. ``n_steps`` interpolation points per image, evaluated ``batch_size`` at a time."""
    from captum.attr import IntegratedGradients

    def run(net, xb, tb):
        return IntegratedGradients(net).attribute(xb, baselines=baseline, target=tb, n_steps=n_steps,
                                                  internal_batch_size=max(batch_size, 1) * 4)

    return _captum(model, X, target, batch_size=batch_size, progress=progress, desc="Integrated Gradients",
                   run=run, reduce=lambda a: a.sum(1, keepdim=True))


def saliency(model: nn.Module, X, target=None, *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Vanilla gradient saliency (Simonyan et al. 2014, Captum ``Saliency``): |d score / d x|, max over channels."""
    from captum.attr import Saliency

    def run(net, xb, tb):
        return Saliency(net).attribute(xb.requires_grad_(True), target=tb, abs=True)

    return _captum(model, X, target, batch_size=batch_size, progress=progress, desc="Saliency",
                   run=run, reduce=lambda a: a.amax(1, keepdim=True))


def occlusion_geometry(spatial: Sequence[int], *, window: int | Sequence[int] | None = None,
                       stride: int | Sequence[int] | None = None,
                       max_positions: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sliding window and stride per spatial axis. Default window ~1/7 of each side; the stride is
    then raised until at most ``max_positions`` windows are evaluated per image (default 256 in 3D,
    1024 in 2D) -- this is what bounds 3D occlusion's run time on a CPU."""
    nd = len(spatial)
    if window is None:
        win = tuple(max(1, math.ceil(s / 7)) for s in spatial)
    else:
        win = tuple(np.broadcast_to(np.asarray(window, int), (nd,)).tolist())
    win = tuple(min(w, s) for w, s in zip(win, spatial))
    if stride is None:
        st = tuple(max(1, w // 2) for w in win)
    else:
        st = tuple(np.broadcast_to(np.asarray(stride, int), (nd,)).tolist())
    cap = max_positions if max_positions is not None else (256 if nd == 3 else 1024)

    def positions(st_: Sequence[int]) -> int:
        return int(np.prod([(s - w) // t + 1 for s, w, t in zip(spatial, win_l, st_)]))

    st_l, win_l = list(st), list(win)
    while positions(st_l) > cap:
        i = int(np.argmax([(s - w) // t for s, w, t in zip(spatial, win_l, st_l)]))
        st_l[i] += 1
        win_l[i] = min(spatial[i], max(win_l[i], st_l[i]))  # Captum needs stride <= window

    return tuple(win_l), tuple(st_l)


def occlusion(model: nn.Module, X, target=None, *, batch_size: int = 8, progress: bool = True,
              window: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
              max_positions: int | None = None, baseline: float = 0.0) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014, Captum): drop in the target score when a window is set to
    ``baseline``; signed, channels summed. Window/stride from :func:`occlusion_geometry`."""
    from captum.attr import Occlusion

    x = as_tensor(X)
    win, st = occlusion_geometry(tuple(x.shape[2:]), window=window, stride=stride, max_positions=max_positions)
    c = x.shape[1]

    def run(net, xb, tb):
        return Occlusion(net).attribute(xb, sliding_window_shapes=(c, *win), strides=(c, *st), baselines=baseline,
                                        target=tb, perturbations_per_eval=16)

    return _captum(model, x, target, batch_size=batch_size, progress=progress, desc="Occlusion",
                   run=run, reduce=lambda a: a.sum(1, keepdim=True) / c)


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "ig": integrated_gradients,
    "occlusion": occlusion,
    "saliency": saliency,
}
LABELS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "ig": "Integrated Gradients",
                          "occlusion": "Occlusion", "saliency": "Saliency"}


def attribute(model: nn.Module, X: np.ndarray | torch.Tensor, target: int | Sequence[int] | np.ndarray | None = None,
              *, method: str | Callable[..., np.ndarray] = "gradcam", batch_size: int | None = None,
              progress: bool = True, **kwargs) -> np.ndarray:
    """Attribution maps (N, 1, H, W[, D]) for ``X`` (N, C, H, W[, D]) with the named method.

    ``target``: class per sample (int, or one per sample); default the predicted class (segmenters: the
    largest predicted foreground class, explained as a region). Extra keyword arguments go to the method
    (``layer=`` for CAMs, ``n_steps=`` for IG, ``window=/stride=/max_positions=`` for occlusion).
    ``method`` may also be a callable with the same signature (a custom method gets the same checks).
    """
    fn = method if callable(method) else METHODS[canonical_method(method)]
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    return fn(model, X, target, progress=progress, **kwargs)


def uncertainty_map(model: nn.Module, X: np.ndarray | torch.Tensor, *, passes: int = 10, seed: int = 0,
                    kind: str = "entropy") -> np.ndarray:
    """The model's own uncertainty as a second view next to the attribution: per-voxel entropy (or another
    ``medwb.models.uncertainty`` kind, e.g. ``bald``) of MC-dropout softmax samples, shape (N, 1, H, W[, D]); for
    classifiers the one value per image is broadcast over the image."""
    from medwb.models.uncertainty import mc_uncertainty_maps

    x = as_tensor(X)
    u = np.asarray(mc_uncertainty_maps(model, x.numpy(), passes=passes, seed=seed, kinds=(kind,))[kind], np.float32)
    if u.ndim == 1:  # classifier: (N,) -> constant map
        u = np.broadcast_to(u.reshape(len(x), 1, *([1] * (x.ndim - 2))), (len(x), 1, *x.shape[2:])).copy()
    else:
        u = u[:, None]
    return u.astype(np.float32)
