"""The cluster gallery: the structure model shown as galleries of each cluster's most typical members (issue 13).

Why: before any label, a person names whole groups of similar cases at once instead of choosing a class for each
case. Each cluster is one card: its most typical members as thumbnails (one PNG strip, so 100 clusters stay light
over the comm), its size and spread (:func:`medwb.al.structure.cluster_summary`), its name, a class menu that
shows class NAMES and stores the class's value (never its position in the menu), and a tick box to pick clusters
for a split (one) or a merge (two or more). Every action is written to the store at once
(:mod:`medwb.al.structure_round`); "review" opens the round of the named cases in the ordinary review queue, the
pre-labels to accept or correct, each label noted as coming from the structure model. Without a front end
(papermill) the gallery is a static figure.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
import numpy as np

from medwb.al.structure import ClusterModel, cluster_summary, names_after_merge
from medwb.al.structure_round import (MEMBERS, SHOWN, merge_recorded, name_cluster, names_from_store,
                                      open_structure_round, split_recorded, structure_batch)
from medwb.errors import MedwbError, StoreError
from medwb.store import Study
from medwb.ui.view import png_bytes, static_views_enabled, to_rgb
from medwb.ui.widgets.case_view import slice2d
from medwb.ui.widgets.review import ReviewQueue
from medwb.ui.widgets.review_text import error_html

ORIGIN = "structure model"  # the review queue's origin: starts the note of every label decided here


def thumb_strip(images: Sequence[np.ndarray], spatial_dims: int = 2, px: int = 64) -> np.ndarray:
    """Thumbnails side by side as one (px, n*px, 3) uint8 image (3-D: the middle slice; each its own window)."""
    from PIL import Image

    cells = []
    for a in images:
        rgb = to_rgb(slice2d(np.asarray(a), spatial_dims))
        cells.append(np.asarray(Image.fromarray(rgb).resize((px, px), Image.Resampling.NEAREST)))
    return np.hstack(cells) if cells else np.zeros((px, px, 3), np.uint8)


def cluster_title(summary: Any, cluster: int, name: str | None) -> str:
    """A card's heading from the :func:`cluster_summary` table: cluster, size, spread, its name when it has one."""
    row = summary[summary["cluster"] == int(cluster)].iloc[0]
    named = f" - named <b>{html.escape(name)}</b>" if name else " - not named"
    return f"<b>cluster {int(cluster)}</b>: {int(row['size'])} cases, spread {float(row['spread']):.3f}{named}"


class ClusterGallery:
    """Name, split and merge the clusters of ``model`` (over the pool's ``embeddings``) for ``study``; thumbnails
    from ``load_image(case_id)``. ``members``: what a naming pre-labels ("typical": the ``shown`` members of the
    gallery, the default; "all": every member). ``per_page`` cards at a time. Names stored earlier are shown."""

    def __init__(self, study: Study, model: ClusterModel, embeddings: np.ndarray,
                 load_image: Callable[[str], np.ndarray], *, annotator: str = "", members: str = "typical",
                 shown: int = SHOWN, spatial_dims: int = 2, thumb_px: int = 64, per_page: int = 10,
                 random_state: int = 0, min_view_seconds: float = 0.5) -> None:
        if members not in MEMBERS:
            raise StoreError(f"members={members!r}. Fix: one of {MEMBERS}")
        self.study, self.model, self.embeddings = study, model, np.asarray(embeddings)
        self.load_image, self.shown, self.spatial_dims = load_image, int(shown), int(spatial_dims)
        self.thumb_px, self.per_page, self.random_state = int(thumb_px), max(1, int(per_page)), int(random_state)
        self.min_view_seconds = float(min_view_seconds)
        stored = study.structure_names()
        self.names = names_from_store(model, dict(zip(stored["case_id"], stored["value"])), self.shown)
        self.class_options = [(str(n), int(v)) for v, n in sorted(study.classes.items())]  # label: NAME, value
        self.annotator = W.Text(value=annotator, description="annotator", placeholder="your name")
        self.members = W.ToggleButtons(options=[("typical members", "typical"), ("all members", "all")],
                                       value=members, description="a name pre-labels")
        self.page = W.IntSlider(value=0, min=0, max=0, description="page", continuous_update=False)
        self.b_split = W.Button(description="split ticked", tooltip="cut the one ticked cluster in two")
        self.b_merge = W.Button(description="merge ticked", tooltip="join the ticked clusters into one")
        self.b_review = W.Button(description="review named cases", button_style="success")
        self.status, self.cards_box, self.review_box = W.HTML(), W.VBox(), W.VBox()
        self.b_split.on_click(lambda _: self._ui(lambda: self.split(self._ticked_one())))
        self.b_merge.on_click(lambda _: self._ui(lambda: self.merge(self.ticked())))
        self.b_review.on_click(lambda _: self._ui(self.review))
        self.page.observe(lambda _: self._draw(), names="value")
        self.widget = W.VBox([W.HBox([self.annotator, self.members]),
                              W.HBox([self.page, self.b_split, self.b_merge, self.b_review]),
                              self.status, self.cards_box, self.review_box])
        self.cards: dict[int, dict[str, Any]] = {}
        self.queue: ReviewQueue | None = None
        self._refresh()

    # ------------------------------------------------------------------ display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _refresh(self) -> None:
        """New model or names: recompute the summary and redraw the page."""
        self.summary = cluster_summary(self.model, self.embeddings, shown=self.shown)
        self.page.max = max(0, (self.model.n_clusters - 1) // self.per_page)
        self._draw()

    def class_name(self, value: int | None) -> str | None:
        return None if value is None else self.study.classes.get(int(value))

    def _draw(self) -> None:
        lo = self.page.value * self.per_page
        self.cards = {}
        for row in self.summary.iloc[lo:lo + self.per_page].itertuples(index=False):
            k = int(row.cluster)
            strip = thumb_strip([self.load_image(c) for c in row.typical], self.spatial_dims, self.thumb_px)
            menu = W.Dropdown(options=self.class_options, value=self.names.get(k), description="class")
            b_name = W.Button(description="name cluster", button_style="info")
            b_name.on_click(lambda _, k=k, menu=menu: self._ui(lambda: self.name(k, menu.value)))
            tick = W.Checkbox(value=False, description="tick", indent=False)
            self.cards[k] = {"title": W.HTML(cluster_title(self.summary, k, self.class_name(self.names.get(k)))),
                             "image": W.Image(value=png_bytes(strip), format="png"), "menu": menu,
                             "name": b_name, "tick": tick}
        self.cards_box.children = [W.VBox([c["title"], c["image"], W.HBox([c["menu"], c["name"], c["tick"]])])
                                   for c in self.cards.values()]

    # ------------------------------------------------------------------ actions (buttons, or code and tests)
    def _who(self) -> str:
        who = self.annotator.value.strip()
        if not who:
            raise StoreError("no annotator name. Fix: type your name in the 'annotator' field")
        return who

    def ticked(self) -> list[int]:
        return [k for k, c in self.cards.items() if c["tick"].value]

    def _ticked_one(self) -> int:
        t = self.ticked()
        if len(t) != 1:
            raise StoreError(f"{len(t)} clusters ticked. Fix: tick exactly one cluster to split")
        return t[0]

    def name(self, cluster: int, value: int | None) -> list[str]:
        """Name ``cluster`` with the class whose stored value is ``value`` (the menu's value, not its position)."""
        if value is None:
            raise StoreError(f"no class chosen for cluster {cluster}. Fix: pick its class in the menu")
        ids = name_cluster(self.study, self.model, cluster, value, by=self._who(), members=self.members.value,
                           shown=self.shown)
        self.names[int(cluster)] = self.study.check_value(value)
        if (card := self.cards.get(int(cluster))) is not None:
            card["title"].value = cluster_title(self.summary, int(cluster), self.class_name(value))
        self.status.value = (f"cluster {int(cluster)} named {html.escape(str(self.class_name(value)))}: "
                             f"{len(ids)} case(s) pre-labelled ({self.members.value} members)")
        return ids

    def split(self, cluster: int) -> ClusterModel:
        """Cut ``cluster`` in two (its name is dropped: the person split it because it held two kinds)."""
        self.model = split_recorded(self.study, self.model, self.embeddings, cluster, by=self._who(),
                                    random_state=self.random_state)
        self.names.pop(int(cluster), None)
        self._refresh()
        self.status.value = f"cluster {int(cluster)} split: its other half is cluster {self.model.n_clusters - 1}"
        return self.model

    def merge(self, clusters: Sequence[int]) -> ClusterModel:
        """Join ``clusters`` into the smallest of them; it keeps a name only if all its named parts agreed."""
        before = self.model.n_clusters
        self.model = merge_recorded(self.study, self.model, clusters, by=self._who(), embeddings=self.embeddings)
        self.names = names_after_merge(self.names, before, clusters)
        self._refresh()
        self.status.value = f"clusters {sorted(int(c) for c in clusters)} merged into cluster {min(clusters)}"
        return self.model

    def review(self) -> ReviewQueue | None:
        """Open the round of the named cases and show its pre-labels in the review queue (None: nothing waits)."""
        who = self._who()
        number = open_structure_round(self.study)
        batch = structure_batch(self.study)
        self.status.value = f"round {number}: {len(batch)} structure pre-label(s) to accept or correct"
        if not len(batch):
            self.queue = None
            return None
        self.queue = ReviewQueue(self.study, batch["case_id"], batch["prelabel"].tolist(), self.load_image,
                                 round=number, origin=ORIGIN, annotator=who, spatial_dims=self.spatial_dims,
                                 min_view_seconds=self.min_view_seconds)
        self.review_box.children = [W.HTML(f"<b>Round {number}: pre-labels from the structure model</b>"),
                                    self.queue.widget]
        return self.queue

    def _ui(self, action: Callable[[], Any]) -> None:
        """Run a button's action; a refusal is shown on the status line, not lost in the log."""
        try:
            action()
        except (MedwbError, ValueError) as e:
            self.status.value = error_html(f"not done: {e}")


def gallery_figure(model: ClusterModel, embeddings: np.ndarray, load_image: Callable[[str], np.ndarray], *,
                   shown: int = SHOWN, max_clusters: int = 12, spatial_dims: int = 2, names: dict[int, str] | None = None):
    """The static gallery (papermill, reports): one row per cluster, largest first, its typical members across."""
    from matplotlib.figure import Figure

    s = cluster_summary(model, embeddings, shown=shown).sort_values("size", ascending=False).head(max_clusters)
    fig = Figure(figsize=(1.1 * shown, 1.2 * len(s) + 0.3), layout="constrained")
    axes = fig.subplots(len(s), 1, squeeze=False)[:, 0]
    for ax, row in zip(axes, s.itertuples(index=False)):
        ax.imshow(thumb_strip([load_image(c) for c in row.typical], spatial_dims, 64), interpolation="nearest")
        ax.set_axis_off()
        name = (names or {}).get(int(row.cluster))
        ax.set_title(f"cluster {int(row.cluster)}: {int(row.size)} cases, spread {float(row.spread):.3f}"
                     + (f", {name}" if name else ""), fontsize=8, loc="left")
    return fig


def cluster_gallery(study: Study | None, model: ClusterModel, embeddings: np.ndarray,
                    load_image: Callable[[str], np.ndarray], *, static: bool | None = None, **kw: Any):
    """The gallery for a notebook: the interactive :class:`ClusterGallery` in a live front end, else (or without
    a study) the static figure."""
    if study is None or static_views_enabled(static):
        return gallery_figure(model, embeddings, load_image, shown=kw.get("shown", SHOWN),
                              spatial_dims=kw.get("spatial_dims", 2))
    return ClusterGallery(study, model, embeddings, load_image, **kw)


__all__ = ["ORIGIN", "ClusterGallery", "cluster_gallery", "cluster_title", "gallery_figure", "thumb_strip"]
