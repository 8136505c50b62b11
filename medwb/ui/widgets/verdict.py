"""XAI review panel (ipywidgets): image, prediction, probability and every method's map side by side; a
verdict per explanation (plausible / partly / implausible / cannot tell), a comment and the reviewer's name
go to the study's SQLite store through ``Study.record_verdict``.

Why it reads saved maps only: ``medwb explain`` (or :func:`medwb.explain.run.run_explain`) writes an
``index.csv`` + NPZ maps + overlay PNGs + ``checks.csv``; the panel shows those files and never loads the
model, so a reviewer's laptop needs no GPU and no weights (review-only mode is the only mode). Failed
sanity checks are printed in red beside the method's map so a reviewer never judges it unwarned.

Drivable from code (tests, papermill): ``panel.show(i)``, ``panel.set_verdict(method, verdict, comment)``,
``panel.reviewer.value = "..."``, ``panel.save()``.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.errors import DataError, StoreError

if TYPE_CHECKING:
    from medwb.store import Study

VERDICT_LABELS: dict[str, str] = {"plausible": "plausible", "partly": "partly", "implausible": "implausible",
                                  "cannot_tell": "cannot tell"}
NOT_REVIEWED = "(not reviewed)"


def load_index(maps_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(index, checks) tables of a maps folder written by ``run_explain``."""
    d = Path(maps_dir)
    idx_path = d / "index.csv"
    if not idx_path.is_file():
        raise DataError(idx_path, "no index.csv in the maps folder",
                        "run `medwb explain MODEL DATA --out FOLDER` first and pass that FOLDER")
    index = pd.read_csv(idx_path, dtype={"case_id": str}, keep_default_na=False)
    need = {"case_id", "method", "map_npz", "overlay_png"}
    if not need <= set(index.columns):
        raise DataError(idx_path, f"columns {sorted(need - set(index.columns))} are missing",
                        "regenerate the folder with the current medwb explain")
    ck = d / "checks.csv"
    checks = pd.read_csv(ck) if ck.is_file() and ck.stat().st_size > 0 else pd.DataFrame()
    return index, checks


class VerdictPanel:
    """Review explanations case by case and record verdicts; see module docstring."""

    def __init__(self, maps_dir: str | Path, study: Study | None = None, *, reviewer: str = "",
                 image_px: int = 224) -> None:
        import ipywidgets as W

        self.root = Path(maps_dir)
        self.index, self.checks = load_index(self.root)
        if self.index.empty:
            raise DataError(self.root / "index.csv", "the index lists no map", "explain at least one case")
        self.study = study
        self.image_px = image_px
        self.case_ids = list(dict.fromkeys(self.index["case_id"].astype(str)))
        self.methods = list(dict.fromkeys(self.index["method"].astype(str)))
        self.pos = 0
        self.saved: list[int] = []

        self.case = W.Dropdown(options=[(f"{i + 1}/{len(self.case_ids)}  {c}", i) for i, c in enumerate(self.case_ids)],
                               description="case")
        self.prev_btn = W.Button(description="◀ previous", layout=W.Layout(width="110px"))
        self.next_btn = W.Button(description="next ▶", layout=W.Layout(width="110px"))
        self.info = W.HTML()
        self.image = W.Image(format="png", width=image_px, height=image_px)
        self.map_images = {m: W.Image(format="png", width=image_px + 60) for m in self.methods}
        self.map_notes = {m: W.HTML() for m in self.methods}
        opts = [(NOT_REVIEWED, "")] + [(lab, v) for v, lab in VERDICT_LABELS.items()]
        self.verdicts = {m: W.Dropdown(options=opts, value="", description="verdict",
                                       layout=W.Layout(width=f"{image_px + 60}px")) for m in self.methods}
        self.comments = {m: W.Textarea(placeholder="comment (optional)",
                                       layout=W.Layout(width=f"{image_px + 60}px", height="60px"))
                         for m in self.methods}
        self.reviewer = W.Text(value=reviewer, description="reviewer", placeholder="your name")
        self.save_btn = W.Button(description="save verdicts", button_style="primary", icon="check")
        self.status = W.HTML()

        self.case.observe(lambda ch: self.show(int(ch["new"])), names="value")
        self.prev_btn.on_click(lambda _b: self.show(max(0, self.pos - 1)))
        self.next_btn.on_click(lambda _b: self.show(min(len(self.case_ids) - 1, self.pos + 1)))
        self.save_btn.on_click(lambda _b: self._save_clicked())

        image_col = W.VBox([W.HTML("<b>image</b>"), self.image])
        cols = [W.VBox([W.HTML(f"<b>{html.escape(m)}</b>"), self.map_images[m], self.map_notes[m], self.verdicts[m],
                        self.comments[m]]) for m in self.methods]
        self.widget = W.VBox([
            W.HBox([self.prev_btn, self.case, self.next_btn]),
            self.info,
            W.HBox([image_col, *cols]),
            W.HBox([self.reviewer, self.save_btn]),
            self.status,
        ])
        self.show(0)

    # -------------------------------------------------------------------------------------------- display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def rows(self, i: int | None = None) -> pd.DataFrame:
        """Index rows (one per method) of case ``i`` (default: the shown one)."""
        cid = self.case_ids[self.pos if i is None else i]
        return self.index[self.index["case_id"].astype(str) == cid]

    def method_checks(self, method: str) -> dict[str, Any]:
        """The method's check results as a flat dict (stored with the verdict)."""
        if self.checks.empty or "method" not in self.checks:
            return {}
        out: dict[str, Any] = {}
        for _, r in self.checks[self.checks["method"].astype(str) == method].iterrows():
            out[f"{r['check']}_value"] = float(r["value"])
            out[f"{r['check']}_passed"] = bool(r["passed"]) if not isinstance(r["passed"], str) \
                else r["passed"].lower() == "true"
        return out

    def _image_png(self, npz_path: Path) -> bytes:
        from medwb.explain.export import focus_slice, spatial
        from medwb.ui.view import png_bytes, to_rgb

        with np.load(npz_path) as z:
            img, mp = spatial(z["image"]), spatial(z["map"])
        if img.ndim == 3:
            img = img[..., focus_slice(mp)]
        scale = max(1, self.image_px // max(img.shape))
        return png_bytes(to_rgb(img), scale=scale)

    def show(self, i: int) -> None:
        """Show case ``i``; verdict fields are cleared (each save is one new record)."""
        self.pos = int(i)
        if self.case.value != self.pos:
            self.case.value = self.pos  # re-enters show() through the observer
            return
        rows = self.rows()
        first = rows.iloc[0]
        bits = [f"<b>{html.escape(str(first['case_id']))}</b>"]
        if str(first.get("prediction_name", "")):
            bits.append(f"prediction: <b>{html.escape(str(first['prediction_name']))}</b>")
        if str(first.get("probability", "")) != "":
            bits.append(f"probability: {float(first['probability']):.3f}")
        if str(first.get("label", "")) not in ("", "nan", "None"):
            bits.append(f"reference label: {html.escape(str(first['label']))}")
        if str(first.get("selection", "")):
            bits.append(f"selected as: {html.escape(str(first['selection']))}")
        self.info.value = " &nbsp;|&nbsp; ".join(bits)
        self.image.value = self._image_png(self.root / str(first["map_npz"]))
        for m in self.methods:
            r = rows[rows["method"].astype(str) == m]
            if r.empty:
                self.map_images[m].value = b""
                self.map_notes[m].value = "<i>no map for this case</i>"
                continue
            self.map_images[m].value = (self.root / str(r.iloc[0]["overlay_png"])).read_bytes()
            failed = str(r.iloc[0].get("failed_checks", "") or "")
            self.map_notes[m].value = (f"<span style='color:#c00'><b>FAILED check: {html.escape(failed)}</b></span>"
                                       if failed else "<span style='color:#080'>all checks passed</span>")
            self.verdicts[m].value = ""
            self.comments[m].value = ""

    def next(self) -> None:
        self.show(min(len(self.case_ids) - 1, self.pos + 1))

    # -------------------------------------------------------------------------------------------- verdicts
    def set_verdict(self, method: str, verdict: str, comment: str = "") -> None:
        """Programmatic equivalent of choosing a verdict (and typing a comment) for one method's map."""
        if method not in self.verdicts:
            raise DataError(None, f"no map for method {method!r} in this folder", f"use one of {self.methods}")
        if verdict not in VERDICT_LABELS:
            raise StoreError(f"verdict {verdict!r} is not one of {tuple(VERDICT_LABELS)}. Fix: pick one of them")
        self.verdicts[method].value = verdict
        self.comments[method].value = comment

    def save(self) -> list[int]:
        """Record every chosen verdict of the shown case in the study; returns the new verdict ids."""
        if self.study is None:
            raise StoreError("no study to record verdicts in. Fix: VerdictPanel(maps_dir, Study.open(folder))")
        reviewer = self.reviewer.value.strip()
        if not reviewer:
            raise StoreError("the reviewer's name is empty. Fix: type your name in the reviewer field")
        rows = self.rows()
        ids = []
        for m in self.methods:
            v = self.verdicts[m].value
            r = rows[rows["method"].astype(str) == m]
            if not v or r.empty:
                continue
            checks = self.method_checks(m)
            failed = str(r.iloc[0].get("failed_checks", "") or "")
            checks["failed_checks"] = failed
            ids.append(self.study.record_verdict(str(r.iloc[0]["case_id"]), m, v, reviewer,
                                                 comment=self.comments[m].value.strip(),
                                                 map_path=(self.root / str(r.iloc[0]["map_npz"])).resolve(),
                                                 checks=checks))
        self.saved.extend(ids)
        return ids

    def _save_clicked(self) -> None:
        try:
            ids = self.save()
        except (StoreError, DataError) as e:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(e))}</span>"
            return
        self.status.value = (f"saved {len(ids)} verdict(s) for {html.escape(self.case_ids[self.pos])}"
                             if ids else "<i>choose a verdict for at least one map first</i>")


def simulated_verdicts(panel: VerdictPanel, *, reviewer: str = "simulated", random_state: int = 0) -> pd.DataFrame:
    """Fill every case with *simulated* verdicts (for demos/tests only -- never presented as a human's):
    a method whose checks failed is marked ``implausible``, others drawn at random from the four verdicts.
    Comments say "simulated". Returns what was recorded."""
    rng = np.random.default_rng(random_state)
    panel.reviewer.value = reviewer
    rec = []
    for i in range(len(panel.case_ids)):
        panel.show(i)
        rows = panel.rows()
        for m in panel.methods:
            r = rows[rows["method"].astype(str) == m]
            if r.empty:
                continue
            v = "implausible" if str(r.iloc[0].get("failed_checks", "") or "") else \
                str(rng.choice(list(VERDICT_LABELS)))
            panel.set_verdict(m, v, "simulated verdict (no human review)")
            rec.append({"case_id": panel.case_ids[i], "method": m, "verdict": v})
        panel.save()
    return pd.DataFrame(rec)
