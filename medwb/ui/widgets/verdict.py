"""XAI review panel (ipywidgets): image, prediction, probability and every method's map side by side; a
verdict per explanation (plausible / partly / implausible / cannot tell), a comment and the reviewer's name
go to the study's SQLite store through ``Study.record_verdict``.

Why it reads saved maps only: ``medwb explain`` (or :func:`medwb.explain.run.run_explain`) writes an
``index.csv`` + NPZ maps + overlay PNGs + ``checks.csv``; the panel shows those files and never loads the
model, so a reviewer's laptop needs no GPU and no weights (review-only mode is the only mode). Failed
sanity checks are printed in red beside the method's map so a reviewer never judges it unwarned.

Drivable from code (tests, papermill): ``panel.show(i)``, ``panel.next()``, ``panel.prev()``,
``panel.set_verdict(method, verdict, comment)``, ``panel.reviewer.value = "..."``, ``panel.save()``.

Choices are auto-saved when the reader moves to another case (see :class:`VerdictPanel`); class numbers are
shown with their names ("0: normal") and every sanity check with one plain-language sentence.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.errors import DataError, StoreError
from medwb.explain.stored import load_npz, read_file, read_table
from medwb.ui.widgets.verdict_text import (
    checks_html,
    class_text,
    index_classes,
    saved_note,
    selection_text,
)

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
    index = read_table(idx_path, dtype={"case_id": str}, keep_default_na=False)
    need = {"case_id", "method", "map_npz", "overlay_png"}
    if not need <= set(index.columns):
        raise DataError(idx_path, f"columns {sorted(need - set(index.columns))} are missing",
                        "regenerate the folder with the current medwb explain")
    ck = d / "checks.csv"
    checks = read_table(ck) if ck.is_file() else pd.DataFrame()
    return index, checks


class VerdictPanel:
    """Review explanations case by case and record verdicts; see module docstring.

    Nothing chosen is lost silently: moving to another case (next, previous, the case menu, :meth:`show`)
    first *auto-saves* the verdicts chosen on the shown case. When they cannot be saved (no reviewer name, no
    study, a comment without a verdict) the panel stays on the case and says why in ``status``. A map this
    reviewer already judged opens with the saved verdict and comment; saving it unchanged writes nothing, and a
    changed verdict supersedes the earlier one (the store keeps the history).
    """

    def __init__(self, maps_dir: str | Path, study: Study | None = None, *, reviewer: str = "",
                 image_px: int = 224) -> None:
        import ipywidgets as W

        self.root = Path(maps_dir)
        self.index, self.checks = load_index(self.root)
        if self.index.empty:
            raise DataError(self.root / "index.csv", "the index lists no map", "explain at least one case")
        self.study = study
        self.classes = dict(study.classes) if study is not None else index_classes(self.index)
        self.image_px = image_px
        self.case_ids = list(dict.fromkeys(self.index["case_id"].astype(str)))
        self.methods = list(dict.fromkeys(self.index["method"].astype(str)))
        self.pos = 0
        self.saved: list[int] = []
        self._syncing = False
        self._ready = False
        self._loaded: dict[str, tuple[str, str]] = {m: ("", "") for m in self.methods}

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
        self.saved_notes = {m: W.HTML() for m in self.methods}
        self.reviewer = W.Text(value=reviewer, description="reviewer", placeholder="your name")
        self.save_btn = W.Button(description="save verdicts", button_style="primary", icon="check")
        self.status = W.HTML()

        self.case.observe(lambda ch: None if self._syncing else self.show(int(ch["new"])), names="value")
        self.prev_btn.on_click(lambda _b: self.prev())
        self.next_btn.on_click(lambda _b: self.next())
        self.save_btn.on_click(lambda _b: self._save_clicked())
        self.reviewer.observe(lambda _ch: self._load_saved(only_untouched=True), names="value")

        image_col = W.VBox([W.HTML("<b>image</b>"), self.image])
        cols = [W.VBox([W.HTML(f"<b>{html.escape(m)}</b>"), self.map_images[m], self.map_notes[m], self.verdicts[m],
                        self.comments[m], self.saved_notes[m]]) for m in self.methods]
        self.widget = W.VBox([
            W.HBox([self.prev_btn, self.case, self.next_btn]),
            self.info,
            W.HBox([image_col, *cols]),
            W.HBox([self.reviewer, self.save_btn]),
            self.status,
        ])
        self.show(0)
        self._ready = True

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
        out: dict[str, Any] = {}
        for _, r in self._check_rows(method).iterrows():
            out[f"{r['check']}_value"] = float(r["value"])
            out[f"{r['check']}_passed"] = bool(r["passed"]) if not isinstance(r["passed"], str) \
                else r["passed"].lower() == "true"
        return out

    def _check_rows(self, method: str) -> pd.DataFrame:
        if self.checks.empty or "method" not in self.checks:
            return pd.DataFrame()
        return self.checks[self.checks["method"].astype(str) == method]

    def _image_png(self, npz_path: Path) -> bytes:
        from medwb.explain.export import focus_slice, spatial
        from medwb.ui.view import png_bytes, to_rgb

        z = load_npz(npz_path)
        img, mp = spatial(z["image"]), spatial(z["map"])
        if img.ndim == 3:
            img = img[..., focus_slice(mp)]
        scale = max(1, self.image_px // max(img.shape))
        return png_bytes(to_rgb(img), scale=scale)

    def show(self, i: int) -> bool:
        """Show case ``i`` with this reviewer's saved verdicts preselected. Unsaved choices on the shown case
        are auto-saved first; when that is impossible the panel stays put (status says why) and returns False."""
        note = self._save_pending() if self._ready else ""
        if note is None:
            self._set_case_menu(self.pos)
            return False
        self._render(int(i))
        self.status.value = " &nbsp;|&nbsp; ".join(x for x in (note, self.status.value) if x)
        return True

    def _set_case_menu(self, i: int) -> None:
        self._syncing = True
        try:
            self.case.value = i
        finally:
            self._syncing = False

    def _render(self, i: int) -> None:
        self.pos = i
        self._set_case_menu(i)
        rows = self.rows()
        first = rows.iloc[0]
        bits = [f"<b>{html.escape(str(first['case_id']))}</b>"]
        pred = first.get("prediction", "")
        pred = first.get("prediction_name", "") if str(pred) in ("", "nan", "None") else pred
        if str(pred) not in ("", "nan", "None"):
            bits.append(f"prediction: <b>{html.escape(class_text(self.classes, pred))}</b>")
        if str(first.get("probability", "")) != "":
            bits.append(f"probability: {float(first['probability']):.3f}")
        if str(first.get("label", "")) not in ("", "nan", "None"):
            bits.append(f"reference label: {html.escape(class_text(self.classes, first['label']))}")
        if str(first.get("selection", "")):
            bits.append(f"selected as: {html.escape(selection_text(self.classes, first['selection']))}")
        self.info.value = " &nbsp;|&nbsp; ".join(bits)
        self.image.value = self._image_png(self.root / str(first["map_npz"]))
        for m in self.methods:
            r = rows[rows["method"].astype(str) == m]
            if r.empty:
                self.map_images[m].value = b""
                self.map_notes[m].value = "<i>no map for this case</i>"
                continue
            self.map_images[m].value = read_file(self.root / str(r.iloc[0]["overlay_png"]))
            failed = str(r.iloc[0].get("failed_checks", "") or "")
            head = (f"<span style='color:#c00'><b>FAILED check: {html.escape(failed)}</b></span>"
                    if failed else "<span style='color:#080'>all checks passed</span>")
            self.map_notes[m].value = head + checks_html(self._check_rows(m))
        self._load_saved(only_untouched=False)

    def next(self) -> bool:
        """Go to the next case (auto-saving this one's choices first; see :meth:`show`)."""
        return self.show(min(len(self.case_ids) - 1, self.pos + 1))

    def prev(self) -> bool:
        """Go to the previous case (auto-saving this one's choices first; see :meth:`show`)."""
        return self.show(max(0, self.pos - 1))

    # -------------------------------------------------------------------------------------------- verdicts
    def stored(self) -> dict[str, pd.Series]:
        """This reviewer's latest saved verdict per method for the shown case (empty without study or name)."""
        reviewer = self.reviewer.value.strip()
        if self.study is None or not reviewer:
            return {}
        v = self.study.verdicts()
        v = v[(v["case_id"].astype(str) == self.case_ids[self.pos]) & (v["reviewer"] == reviewer)]
        return {str(r["method"]): r for _, r in v.iterrows()}

    def _load_saved(self, *, only_untouched: bool) -> None:
        """Fill the fields from the store; with ``only_untouched`` (the reviewer's name changed) a field the
        reader has edited since it was filled keeps the reader's choice."""
        stored = self.stored()
        notes = []
        for m in self.methods:
            if only_untouched and self._chosen(m) != self._loaded[m]:
                continue
            row = stored.get(m)
            value = ("", "") if row is None else (str(row["verdict"]), str(row["comment"]))
            self.verdicts[m].value, self.comments[m].value = value
            self._loaded[m] = value
            self.saved_notes[m].value = "" if row is None else saved_note(value[0], str(row["created_at"]))
            if row is not None:
                notes.append(f"{html.escape(m)}: {self.saved_notes[m].value}")
        self.status.value = "; ".join(notes)

    def _chosen(self, method: str) -> tuple[str, str]:
        return str(self.verdicts[method].value or ""), self.comments[method].value.strip()

    def pending(self) -> dict[str, tuple[str, str]]:
        """Methods whose (verdict, comment) on screen differ from what the store holds for this reviewer."""
        stored = self.stored()
        out = {}
        for m in self.methods:
            v, c = self._chosen(m)
            row = stored.get(m)
            held = ("", "") if row is None else (str(row["verdict"]), str(row["comment"]).strip())
            if (v or c) and (v, c) != held:
                out[m] = (v, c)
        return out

    def _save_pending(self) -> str | None:
        """Auto-save before leaving the case: what was saved ("" for nothing), or None (and a red status)
        when the choices cannot be saved."""
        pend = self.pending()
        if not pend:
            return ""
        bare = [m for m, (v, _c) in pend.items() if not v]
        try:
            if bare:
                raise StoreError(f"a comment for {', '.join(bare)} has no verdict. "
                                 "Fix: choose a verdict for it, or clear the comment")
            ids = self.save()
        except (StoreError, DataError) as e:
            self.status.value = (f"<span style='color:#c00'>not saved, still on this case: "
                                 f"{html.escape(str(e))}</span>")
            return None
        return f"auto-saved {len(ids)} verdict(s) for {html.escape(self.case_ids[self.pos])}"

    def set_verdict(self, method: str, verdict: str, comment: str = "") -> None:
        """Programmatic equivalent of choosing a verdict (and typing a comment) for one method's map."""
        if method not in self.verdicts:
            raise DataError(None, f"no map for method {method!r} in this folder", f"use one of {self.methods}")
        if verdict not in VERDICT_LABELS:
            raise StoreError(f"verdict {verdict!r} is not one of {tuple(VERDICT_LABELS)}. Fix: pick one of them")
        self.verdicts[method].value = verdict
        self.comments[method].value = comment

    def save(self) -> list[int]:
        """Record the shown case's verdicts that differ from this reviewer's saved ones; returns the new ids
        (an unchanged verdict is not written again, a changed one supersedes the earlier record)."""
        if self.study is None:
            raise StoreError("no study to record verdicts in. Fix: VerdictPanel(maps_dir, Study.open(folder))")
        reviewer = self.reviewer.value.strip()
        if not reviewer:
            raise StoreError("the reviewer's name is empty. Fix: type your name in the reviewer field")
        rows = self.rows()
        pend = self.pending()
        ids = []
        for m in self.methods:
            v, comment = pend.get(m, ("", ""))
            r = rows[rows["method"].astype(str) == m]
            if not v or r.empty:
                continue
            checks = self.method_checks(m)
            checks["failed_checks"] = str(r.iloc[0].get("failed_checks", "") or "")
            ids.append(self.study.record_verdict(str(r.iloc[0]["case_id"]), m, v, reviewer, comment=comment,
                                                 map_path=(self.root / str(r.iloc[0]["map_npz"])).resolve(),
                                                 checks=checks))
        self.saved.extend(ids)
        if ids:
            self._load_saved(only_untouched=False)
        return ids

    def _save_clicked(self) -> None:
        try:
            ids = self.save()
        except (StoreError, DataError) as e:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(e))}</span>"
            return
        if ids:
            self.status.value = f"saved {len(ids)} verdict(s) for {html.escape(self.case_ids[self.pos])}"
        elif any(self._chosen(m)[0] for m in self.methods):
            self.status.value = "<i>nothing changed since the last save</i>"
        else:
            self.status.value = "<i>choose a verdict for at least one map first</i>"


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
