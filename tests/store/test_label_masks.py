"""add_label(mask=...): the store saves the mask itself under ONE naming rule, one file per label."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medwb.errors import DataError, StoreError
from medwb.store import Study, read_mask

CLASSES = {0: "background", 1: "vessel"}


@pytest.fixture()
def chase(tmp_path: Path, samples: Path) -> tuple[Study, np.ndarray, np.ndarray]:
    root = samples / "segmentation_2d" / "chase_db1"
    m1 = (np.asarray(Image.open(root / "manual_1stHO" / "Image_01L_1stHO.png").convert("L")) > 127).astype(np.int64)
    m2 = (np.asarray(Image.open(root / "manual_2ndHO" / "Image_01L_2ndHO.png").convert("L")) > 127).astype(np.int64)
    h, w = m1.shape
    s = Study.create(tmp_path / "seg", dataset_path=root, task="segmentation", classes=CLASSES)
    s.add_cases(pd.DataFrame({"case_id": ["Image_01L", "Image_01R"], "split": "train", "shape": f"{h}x{w}", "ndim": 2}))
    yield s, m1, m2
    s.close()


def test_same_annotator_same_case_twice_gives_two_readable_files(chase) -> None:
    s, m1, m2 = chase
    a = s.add_label("Image_01L", mask=m1, annotator="observer_1", round=1)
    b = s.add_label("Image_01L", mask=m2, annotator="observer_1", source="human", round=1)
    rows = s.labels(latest=False).set_index("label_id")
    pa, pb = Path(rows.at[a, "mask_path"]), Path(rows.at[b, "mask_path"])
    assert pa != pb and pa.parent == pb.parent == s.layout.masks
    assert pa == s.layout.label_mask("Image_01L", "observer_1", "human", 1, a)
    assert pa.name == f"Image_01L__observer_1__human__r1__L{a:06d}.npy"
    assert np.array_equal(read_mask(pa), m1) and np.array_equal(read_mask(pb), m2)  # the first was not overwritten
    assert bool(rows.at[a, "superseded"]) and not bool(rows.at[b, "superseded"])
    hist = s.label_history()
    assert hist["to_mask"].tolist() == [s.rel(pa), s.rel(pb)] and hist["from_mask"].tolist()[1] == s.rel(pa)


def test_batch_with_masks_is_one_transaction_and_ids_match_names(chase, monkeypatch: pytest.MonkeyPatch) -> None:
    s, m1, m2 = chase
    s.add_label("Image_01R", value=None, mask=m2, annotator="reader", source="corrected", round=None)
    lids = s.add_labels([{"case_id": "Image_01L", "mask": m1, "annotator": "model:x", "source": "auto", "round": 2},
                         {"case_id": "Image_01R", "mask": m1, "annotator": "model:x", "source": "auto", "round": 2}])
    cur = s.labels(latest=False).set_index("label_id")
    for lid in lids:
        assert Path(cur.at[lid, "mask_path"]).name.endswith(f"__auto__r2__L{lid:06d}.npy")
    before = sorted(s.layout.masks.iterdir())
    with pytest.raises(DataError, match="outside the classes"):  # a bad mask anywhere: nothing written, no file
        s.add_labels([{"case_id": "Image_01L", "mask": m1, "annotator": "a"},
                      {"case_id": "Image_01R", "mask": m1 * 2, "annotator": "a"}])
    import medwb.store.labels as writer

    real, calls = writer.save_npy, []

    def full_disk_on_second(path: Path, arr: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, arr)

    monkeypatch.setattr(writer, "save_npy", full_disk_on_second)
    with pytest.raises(OSError, match="No space"):  # fails inside the transaction after the first mask file
        s.add_labels([{"case_id": "Image_01L", "mask": m1, "annotator": "a"},
                      {"case_id": "Image_01R", "mask": m1, "annotator": "a"}])
    assert len(calls) == 2 and not calls[0].exists()  # the first file was removed with the rolled-back rows
    assert sorted(s.layout.masks.iterdir()) == before and len(s.labels(latest=False)) == 3


def test_mask_and_mask_path_rules(chase) -> None:
    s, m1, _ = chase
    p = s.save_mask("Image_01L", m1, tag="slicer")  # a file already on disk is still accepted as mask_path=
    with pytest.raises(StoreError, match="both mask= and mask_path="):
        s.add_label("Image_01L", mask=m1, mask_path=p, annotator="a")
    with pytest.raises(DataError, match="non-integer"):
        s.add_label("Image_01L", mask=m1 * 0.5, annotator="a")
    lid = s.add_label("Image_01L", mask_path=p, annotator="a")
    assert s.labels().set_index("label_id").at[lid, "mask_path"] == str(p)
    assert not list(s.layout.masks.glob("*__L*.npy"))  # mask_path= writes no second copy
