"""`medwb explain` output folder -> verdict panel -> verdicts in the study's SQLite store; review-only mode
(no model file, no torch import) in a separate process. Real PneumoniaMNIST data and a tiny trained model."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from medwb.data import open_dataset
from medwb.errors import DataError, StoreError
from medwb.explain.run import run_explain
from medwb.models import save_checkpoint
from medwb.store import Study
from medwb.ui.widgets.verdict import VerdictPanel, simulated_verdicts


@pytest.fixture(scope="module")
def explained(samples, tmp_path_factory, tiny_pneumonia_model):
    """A study with the PneumoniaMNIST cohort, a registered model and an explain folder of 3 cases."""
    root = tmp_path_factory.mktemp("verdict")
    data = samples / "classification_2d" / "pneumoniamnist.npz"
    ds = open_dataset(data)
    m = tiny_pneumonia_model
    study = Study.create(root / "study", dataset_path=str(data), task="classification", classes=ds.classes)
    study.add_cases(ds.cohort)
    ckpt = save_checkpoint(m, root / "study" / "models" / "m.pt", {"round": 1})
    study.add_model(1, ckpt, {"auc": 0.0})
    study.close()
    out = root / "study" / "maps"
    res = run_explain(root / "study", data, method="gradcam,ig", cases=3, out_dir=out, select="misclassified",
                      progress=False)
    return {"root": root, "study_dir": root / "study", "out": out, "res": res, "data": data}


def test_run_explain_writes_index_checks_maps(explained):
    res, out = explained["res"], explained["out"]
    idx = pd.read_csv(out / "index.csv", dtype={"case_id": str})
    assert len(idx) == 6 and set(idx.method) == {"gradcam", "ig"}
    assert idx.model_version.str.startswith("r1-").all()  # latest model of the study was used
    for col in ("map_npz", "map_nifti", "overlay_png"):
        assert all((out / p).is_file() for p in idx[col])
    ck = pd.read_csv(out / "checks.csv")
    assert set(ck.check) == {"randomization", "deletion_auc", "insertion_auc"} and set(ck.method) == {"gradcam", "ig"}
    with np.load(out / idx.map_npz.iloc[0]) as z:
        assert z["map"].shape == (1, 28, 28) and z["image"].shape == (1, 28, 28)
    assert res.index.selection.str.contains("misclassified|uncertain").all()


def test_panel_records_verdicts_in_study(explained):
    study = Study.open(explained["study_dir"])
    panel = VerdictPanel(explained["out"], study)
    assert panel.methods == ["gradcam", "ig"] and len(panel.case_ids) == 3
    assert panel.image.value[:4] == b"\x89PNG" and panel.map_images["ig"].value[:4] == b"\x89PNG"
    assert "prediction" in panel.info.value and "probability" in panel.info.value
    with pytest.raises(StoreError, match="reviewer"):
        panel.set_verdict("gradcam", "plausible")
        panel.save()
    panel.reviewer.value = "Dr. Test"
    panel.set_verdict("gradcam", "plausible", "lung fields highlighted")
    panel.set_verdict("ig", "implausible", "grid pattern")
    ids = panel.save()
    assert len(ids) == 2
    panel.next()
    assert panel.pos == 1 and panel.verdicts["gradcam"].value == ""  # fields cleared for the next case
    panel.set_verdict("ig", "cannot_tell")
    panel._save_clicked()  # the button's handler
    assert "saved 1" in panel.status.value
    v = study.verdicts()
    assert len(v) == 3
    first = v.iloc[0]
    assert first.case_id == panel.case_ids[0] and first.method == "gradcam" and first.verdict == "plausible"
    assert first.reviewer == "Dr. Test" and first.comment == "lung fields highlighted"
    assert "randomization_passed" in first.checks and "failed_checks" in first.checks
    assert first.map_path.endswith(".npz")
    with pytest.raises(StoreError):
        panel.set_verdict("ig", "great")
    with pytest.raises(DataError):
        panel.set_verdict("lime", "plausible")
    study.close()


def test_simulated_verdicts_are_labelled_as_such(explained, tmp_path):
    import shutil

    study_dir = tmp_path / "study"
    shutil.copytree(explained["study_dir"], study_dir)
    study = Study.open(study_dir)
    n0 = len(study.verdicts())
    rec = simulated_verdicts(VerdictPanel(study_dir / "maps", study), random_state=0)
    v = study.verdicts().iloc[n0:]
    assert len(v) == len(rec) == 6
    assert (v.reviewer == "simulated").all() and v.comment.str.contains("simulated").all()
    study.close()


def test_review_only_mode_without_model_or_torch(explained, tmp_path):
    import shutil

    study_dir = tmp_path / "study"
    shutil.copytree(explained["study_dir"], study_dir)
    shutil.rmtree(study_dir / "models")  # the reviewer's laptop has no weights
    code = textwrap.dedent(f"""
        import sys
        from medwb.store import Study
        from medwb.ui.widgets.verdict import VerdictPanel
        s = Study.open({str(study_dir)!r})
        p = VerdictPanel({str(study_dir / 'maps')!r}, s, reviewer="Reviewer B")
        p.show(2)
        p.set_verdict("gradcam", "partly", "offline review")
        import json
        print(json.dumps(dict(ids=p.save(), n=len(s.verdicts()), torch="torch" in sys.modules,
                              case=p.case_ids[2])))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and len(got["ids"]) == 1
    s = Study.open(study_dir)
    v = s.verdicts().set_index("id").loc[got["ids"][0]]
    assert v.verdict == "partly" and v.reviewer == "Reviewer B" and v.case_id == got["case"]
    s.close()


def test_missing_index_is_a_named_error(tmp_path):
    with pytest.raises(DataError, match="index.csv"):
        VerdictPanel(tmp_path)


# ------------------------------------------------------------------------ clinician test (issue 14, item 9)
def _copy_study(explained, tmp_path) -> Study:
    import shutil

    shutil.copytree(explained["study_dir"], tmp_path / "study")
    return Study.open(tmp_path / "study")


def _mine(study: Study, reviewer: str, *, history: bool = False) -> pd.DataFrame:
    v = study.verdicts(history=history)
    return v[v.reviewer == reviewer]


def test_next_auto_saves_the_chosen_verdict(explained, tmp_path):
    study = _copy_study(explained, tmp_path)
    panel = VerdictPanel(tmp_path / "study" / "maps", study, reviewer="Dr. Auto")
    panel.set_verdict("gradcam", "plausible", "lungs")
    panel.next_btn.click()  # the button, without pressing save first
    assert panel.pos == 1 and "auto-saved 1" in panel.status.value
    v = _mine(study, "Dr. Auto")
    assert len(v) == 1 and v.iloc[0].case_id == panel.case_ids[0] and v.iloc[0].verdict == "plausible"
    assert v.iloc[0].comment == "lungs"
    panel.set_verdict("ig", "partly", "typed, then went back")
    panel.prev_btn.click()
    assert panel.pos == 0 and len(_mine(study, "Dr. Auto")) == 2
    study.close()


def test_unsavable_choice_keeps_the_reader_on_the_case(explained, tmp_path):
    study = _copy_study(explained, tmp_path)
    panel = VerdictPanel(tmp_path / "study" / "maps", study)  # no reviewer name yet
    panel.set_verdict("gradcam", "implausible", "edges only")
    panel.next_btn.click()
    assert panel.pos == 0 and panel.verdicts["gradcam"].value == "implausible"
    assert "still on this case" in panel.status.value and "reviewer" in panel.status.value
    panel.case.value = 2  # the case menu is guarded too, and snaps back
    assert panel.pos == 0 and panel.case.value == 0 and panel.comments["gradcam"].value == "edges only"
    panel.reviewer.value = "Dr. Late"
    panel.comments["ig"].value = "a comment without a verdict"
    assert panel.next() is False and "has no verdict" in panel.status.value
    assert len(_mine(study, "Dr. Late")) == 0  # nothing half-saved
    panel.comments["ig"].value = ""
    assert panel.next() is True and panel.pos == 1
    assert list(_mine(study, "Dr. Late").verdict) == ["implausible"]
    no_store = VerdictPanel(tmp_path / "study" / "maps", reviewer="Dr. X")
    no_store.set_verdict("ig", "partly")
    assert no_store.next() is False and "no study" in no_store.status.value
    study.close()


def test_going_back_shows_the_saved_verdict(explained, tmp_path):
    study = _copy_study(explained, tmp_path)
    maps = tmp_path / "study" / "maps"
    panel = VerdictPanel(maps, study, reviewer="Dr. Back")
    panel.set_verdict("gradcam", "plausible", "lung fields")
    panel.save()
    panel.next()
    assert panel.verdicts["gradcam"].value == ""
    panel.prev()
    assert panel.verdicts["gradcam"].value == "plausible" and panel.comments["gradcam"].value == "lung fields"
    assert panel.verdicts["ig"].value == ""
    assert panel.saved_notes["gradcam"].value.startswith("saved plausible at ")
    assert "saved plausible at" in panel.status.value and "not reviewed" not in panel.status.value
    again = VerdictPanel(maps, study, reviewer="Dr. Back")  # a new session opens with it too
    assert again.verdicts["gradcam"].value == "plausible"
    later = VerdictPanel(maps, study)  # the name typed after opening fills the saved verdicts
    assert later.verdicts["gradcam"].value == ""
    later.reviewer.value = "Dr. Back"
    assert later.verdicts["gradcam"].value == "plausible" and "saved plausible at" in later.status.value
    other = VerdictPanel(maps, study, reviewer="Dr. Other")  # another reviewer's verdict is not theirs
    assert other.verdicts["gradcam"].value == ""
    study.close()


def test_saving_again_does_not_duplicate(explained, tmp_path):
    study = _copy_study(explained, tmp_path)
    panel = VerdictPanel(tmp_path / "study" / "maps", study, reviewer="Dr. Twice")
    panel.set_verdict("gradcam", "partly", "unsure")
    assert len(panel.save()) == 1
    assert panel.save() == []  # identical repeat: nothing written
    panel._save_clicked()
    assert "nothing changed" in panel.status.value
    panel.next()
    panel.prev()
    assert len(_mine(study, "Dr. Twice", history=True)) == 1
    panel.set_verdict("gradcam", "plausible", "looked again")
    assert len(panel.save()) == 1
    v = _mine(study, "Dr. Twice")
    assert len(v) == 1 and v.iloc[0].verdict == "plausible" and v.iloc[0].comment == "looked again"
    assert len(_mine(study, "Dr. Twice", history=True)) == 2
    study.close()


def test_labels_and_predictions_show_class_names(explained, tmp_path):
    study = _copy_study(explained, tmp_path)
    maps = tmp_path / "study" / "maps"
    idx = pd.read_csv(maps / "index.csv", dtype={"case_id": str})
    panel = VerdictPanel(maps, study)
    for i, cid in enumerate(panel.case_ids):
        panel.show(i)
        row = idx[idx.case_id == cid].iloc[0]
        label, pred = int(row.label), int(row.prediction)
        assert f"reference label: {label}: {study.classes[label]}" in panel.info.value
        assert f"prediction: <b>{pred}: {study.classes[pred]}</b>" in panel.info.value
        if "misclassified" in row.selection:
            assert f"(true {label}: {study.classes[label]}, predicted {pred}: {study.classes[pred]})" \
                in panel.info.value
    without_study = VerdictPanel(maps)  # the explain run's own class names
    row = idx[idx.case_id == without_study.case_ids[0]].iloc[0]
    assert f"prediction: <b>{int(row.prediction)}: {row.prediction_name}</b>" in without_study.info.value
    study.close()


def test_every_check_has_a_plain_language_sentence(explained):
    import html

    from medwb.explain.check_texts import CHECK_TEXTS, plain_text

    panel = VerdictPanel(explained["out"])
    ck = pd.read_csv(explained["out"] / "checks.csv")
    assert set(ck.check) <= set(CHECK_TEXTS)
    for m in panel.methods:
        for check in set(ck[ck.method == m].check):
            assert html.escape(plain_text(check)) in panel.map_notes[m].value
    assert "weights are scrambled" in plain_text("randomization")
    assert "random pixels" in plain_text("deletion_auc") and "mask_energy" in CHECK_TEXTS


def test_the_review_app_page_serves_the_verdict_panel_under_the_readers_name(explained, tmp_path) -> None:
    """Issue 14: the app serves the explanation verdict panel too: a 'judge explanations' tab on the reader's page
    when the study holds explanations, the reviewer fixed to the reader the token names."""
    import ipywidgets as W

    from medwb.ui.widgets.reader import READERS_ENV, STUDY_ENV, reader_page, token_digest

    f = tmp_path / "r.json"
    f.write_text(json.dumps({token_digest("t"): "dr_v"}))
    page = reader_page({STUDY_ENV: str(explained["study_dir"]), READERS_ENV: str(f), "QUERY_STRING": "token=t"})
    tabs = page.children[2]
    assert isinstance(tabs, W.Tab) and tabs.get_title(1) == "judge explanations"
    verdict_box = tabs.children[1]
    texts = [w for w in _walk(verdict_box) if isinstance(w, W.Text)]
    reviewer = next(w for w in texts if w.description == "reviewer")
    assert reviewer.value == "dr_v" and reviewer.disabled  # no other name can be typed
    dropdowns = [w for w in _walk(verdict_box) if isinstance(w, W.Dropdown) and w.description == "verdict"]
    dropdowns[0].value = "plausible"
    save = next(w for w in _walk(verdict_box) if isinstance(w, W.Button) and w.description == "save verdicts")
    save.click()
    with Study.open(explained["study_dir"]) as s:
        mine = s.verdicts()
        mine = mine[mine["reviewer"] == "dr_v"]
    assert len(mine) == 1 and mine.iloc[0]["verdict"] == "plausible"


def _walk(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _walk(c)
