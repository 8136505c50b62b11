"""Issue 14: "the model's uncertainty shown for classification too". A reader's page in the review app (no model
loaded) and notebook 02's queue show, beside a classification case, the model's class probabilities by class name
with their MC-dropout spread and its saliency map, as the loop stored them when it proposed the round; a missing
map file leaves the probabilities and names the file, a case without stored evidence shows what exists."""
from __future__ import annotations

import json
from pathlib import Path

import ipywidgets as W
import numpy as np


def _named_loop(samples: Path, tmp_path: Path):
    """A tiny real PneumoniaMNIST pool under its MedMNIST name (so its classes are "normal" / "pneumonia")."""
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.al.loop import ActiveLearningLoop
    from medwb.data import open_dataset
    from medwb.models import TrainConfig
    from medwb.store import Study

    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "pneumoniamnist.npz", n_train=30, n_val=10, n_test=10)
    ds = open_dataset(path, progress=False)
    study = Study.create(tmp_path / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy="entropy", batch_size=4, seed=0, progress=False, pretrain=False,
                              semi=False, mc_passes=5,
                              train_config=TrainConfig(epochs=1, min_epochs=1, batch_size=4, patience=1, seed=0))
    return study, ds, loop


def _widgets(w: W.Widget) -> list[W.Widget]:
    out = [w]
    for c in getattr(w, "children", ()):
        out += _widgets(c)
    return out


def test_reader_page_shows_class_probabilities_and_the_saliency_map(samples: Path, tmp_path: Path) -> None:
    from medwb.al.oracle import simulated_oracle
    from medwb.ui.widgets.class_evidence import probabilities_html, within_spread
    from medwb.ui.widgets.reader import READERS_ENV, STUDY_ENV, reader_page, reader_queue, token_digest
    from medwb.ui.widgets.review import review_next_round

    study, ds, loop = _named_loop(samples, tmp_path)
    assert ds.classes == {0: "normal", 1: "pneumonia"}
    loop.run_round(simulated_oracle(ds))
    batch = [str(c) for c in loop.propose()["case_id"]]  # round 2: pre-labels, probabilities and maps stored

    nb = review_next_round(loop, annotator="r")  # notebook 02's queue shows what the readers see
    ev = study.case_class_evidence(2, nb.current)
    assert "1: pneumonia" in nb.view.note.value and "0: normal" in nb.view.note.value
    assert f"{ev.mean[1]:.2f} &plusmn; {ev.std[1]:.2f}" in nb.view.note.value
    assert nb.umap.value[:4] == b"\x89PNG" and "Grad-CAM of" in nb.view.umap_title.value

    f = tmp_path / "r.json"
    f.write_text(json.dumps({token_digest("a"): "ana"}))
    page = reader_page({STUDY_ENV: str(study.folder), READERS_ENV: str(f), "QUERY_STRING": "token=a"})
    parts = _widgets(page)
    text = " ".join(w.value for w in parts if isinstance(w, W.HTML))
    ev = study.case_class_evidence(2, batch[0])  # ana's first case
    assert f"<code>{batch[0]}</code>" in text
    for v, name in ds.classes.items():  # class names, each with its mean and spread
        assert f"{v}: {name}" in text and f"{ev.mean[v]:.2f} &plusmn; {ev.std[v]:.2f}" in text
    assert "MC-dropout passes" in text and "where the model looked" in text
    shown = [w for w in parts if isinstance(w, W.Image) and w.value]
    assert len(shown) == 2 and all(w.layout.display != "none" for w in shown)  # the image and the map beside it
    assert shown[1].value != shown[0].value

    # a damaged study: ben's case has lost its map file; the probabilities stay, the file and the fix are named
    lost = Path(study.class_evidence(2).set_index("case_id").loc[batch[1], "map_path"])
    lost.unlink()
    ben = reader_queue(study, "ben", min_view_seconds=0)
    assert ben.current == batch[1]
    assert "1: pneumonia" in ben.view.note.value and "could not be shown" in ben.view.note.value
    assert lost.name in ben.view.note.value and "propose the round" in ben.view.note.value
    assert ben.umap.value == b"" and ben.umap.layout.display == "none"  # no broken-image icon

    # a study made before the evidence was stored: the case shows its pre-label and confidence, no panel, no error
    with study.transaction() as c:
        c.execute("DELETE FROM class_evidence WHERE case_id = ?", (batch[2],))
    ben.keys.value = "1"
    assert ben.current == batch[2] and "proposed class" in ben.title.value and "confidence" in ben.title.value
    assert ben.view.umap_box.layout.display == "none" and ben.umap.value == b""

    assert within_spread(np.array([0.55, 0.45]), np.array([0.06, 0.05]))
    assert not within_spread(np.array([0.9, 0.1]), np.array([0.02, 0.02]))
    warn = probabilities_html(ds.classes, np.array([0.45, 0.55]), np.array([0.06, 0.05]), 20)
    assert "cannot tell 1: pneumonia from 0: normal" in warn
    assert "cannot tell" not in probabilities_html(ds.classes, np.array([0.1, 0.9]), np.array([0.02, 0.02]), 20)
    study.close()


def test_the_adjudicator_sees_what_the_readers_saw(samples: Path, tmp_path: Path) -> None:
    """A double-read case the readers disagree on: the adjudication view shows, beside the image, the model's class
    probabilities and saliency map stored when the round was proposed."""
    from medwb.al.oracle import simulated_oracle
    from medwb.ui.widgets.adjudicate import AdjudicationPanel
    from medwb.ui.widgets.reader import reader_queue

    study, ds, loop = _named_loop(samples, tmp_path)
    loop.run_round(simulated_oracle(ds))
    case = str(loop.propose()["case_id"].iloc[0])
    study.set_reads([case], 2)
    ana, ben = reader_queue(study, "ana", min_view_seconds=0), reader_queue(study, "ben", min_view_seconds=0)
    assert ana.current == ben.current == case
    ana.keys.value, ben.keys.value = "0", "1"
    panel = AdjudicationPanel(study, "dr_s", ds.load_image, min_view_seconds=0)
    assert panel.current == case
    ev = study.case_class_evidence(2, case)
    note = panel.view.note.value
    for v, name in ds.classes.items():
        assert f"{v}: {name}" in note and f"{ev.mean[v]:.2f} &plusmn; {ev.std[v]:.2f}" in note
    assert "Grad-CAM of" in panel.view.umap_title.value and panel.view.umap.value[:4] == b"\x89PNG"
    panel.keys.value = "1"
    assert study.labels().set_index("case_id").loc[case, "annotator"] == "dr_s"
    study.close()
