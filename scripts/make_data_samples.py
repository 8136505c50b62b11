"""Rebuild data_samples/ from the shared real-data folder (default: ../shared/data beside the repo).

Deterministic: the same source gives the same subset. Each subset keeps its licence and citation (LICENSE.md).
The 2D segmentation sets get a ``metadata.csv`` (case_id, split) with train/val/test splits (see ``chase_splits``
and ``hc18_splits``), since neither release has split folders; ``--splits-only`` rewrites just those files.
Usage: python scripts/make_data_samples.py [SHARED_DATA_DIR] [--out DIR] [--splits-only]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data_samples"
HC18_SPLIT_SEED = 0
HC18_FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test, of subjects

LICENCES = {
    "pneumoniamnist": ("CC BY 4.0", "Yang et al., \"MedMNIST v2\", Scientific Data 10:41 (2023); "
                       "Kermany et al., Cell 172(5):1122-1131 (2018).",
                       "Official MedMNIST release file pneumoniamnist.npz (28x28 chest X-ray, 0 normal / 1 pneumonia), "
                       "byte-identical, all splits."),
    "adrenalmnist3d": ("CC BY 4.0", "Yang et al., \"MedMNIST v2\", Scientific Data 10:41 (2023). AdrenalMNIST3D from "
                       "Zhongshan Hospital, Fudan University.",
                       "Official MedMNIST release file adrenalmnist3d.npz (28^3 binary adrenal shape masks, "
                       "0 normal / 1 hyperplasia), byte-identical, all splits."),
    "hc18": ("CC BY 4.0", "van den Heuvel et al., PLoS ONE 13(8):e0200412 (2018), doi:10.1371/journal.pone.0200412.",
             "HC18 fetal head ultrasound: the first {n} images of the shared HC18 subset with their head annotations "
             "and pixel size / head circumference table. In this copy the annotation PNGs are already filled "
             "ellipses (checked: every mask covers ~pi/4 of its bounding box); the original HC18 release has "
             "1-pixel ellipse outlines, which medwb detects and fills on load."),
    "chase_db1": ("CC BY 4.0", "Fraz et al., IEEE Trans. Biomed. Eng. 59(9):2538-2548 (2012), "
                  "doi:10.1109/TBME.2012.2205687; dataset: https://researchdata.kingston.ac.uk/96/",
                  "CHASE_DB1 retinal fundus photographs, all 28 images, vessel masks by both observers."),
    "hippocampus": ("CC BY-SA 4.0 (ShareAlike: derivatives keep this licence)",
                    "Antonelli et al., \"The Medical Segmentation Decathlon\", Nature Communications 13:4128 (2022); "
                    "Simpson et al., arXiv:1902.09063 (2019).",
                    "MSD Task04_Hippocampus: {n} labelled training cases (sorted by id) and {u} unlabelled test images, "
                    "with a dataset.json restricted to them."),
    "dicom": ("MIT (pydicom test files) and Apache-2.0 (TotalSegmentator repository samples)",
              "pydicom test files (NEMA WG04 sample images and others, see README_pydicom_test_files.txt); "
              "Wasserthal et al., \"TotalSegmentator\", Radiology: Artificial Intelligence 5(5) (2023).",
              "pydicom/: single DICOM files and a DICOMDIR tree (sample patient tags, for de-identification); "
              "ct_series/: a 20-slice CT series (JPEG 2000 lossless) from the TotalSegmentator samples, with "
              "its model-made label map ct_series_seg.nii.gz (not manual truth)."),
}


def write_licence(folder: Path, key: str, **fmt: int) -> None:
    lic, cite, what = LICENCES[key]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "LICENSE.md").write_text(
        f"# {folder.name}\n\n{what.format(**fmt)}\n\nLicence: {lic}\n\nCite: {cite}\n", encoding="utf-8"
    )


def _stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "images").iterdir() if p.is_file() and not p.name.startswith("."))


def chase_splits(folder: Path) -> dict[str, str]:
    """CHASE_DB1 convention (Fraz et al. 2012 and most vessel-segmentation papers): the images of subjects
    01-10 (both eyes, ``Image_01L`` .. ``Image_10R``) train, subjects 11-14 test. Holding out 4 of the 20
    training subjects as "val" would break comparability with published numbers, so there is no val split."""
    out = {}
    for stem in _stems(folder):
        m = re.fullmatch(r"Image_(\d+)[LR]", stem)
        if m is None:
            raise ValueError(f"{folder}: unexpected CHASE_DB1 image name {stem!r} (expected Image_NNL/R)")
        out[stem] = "train" if int(m.group(1)) <= 10 else "test"
    return out


def hc18_splits(folder: Path, seed: int = HC18_SPLIT_SEED,
                fractions: tuple[float, float, float] = HC18_FRACTIONS) -> dict[str, str]:
    """Seeded subject-grouped train/val/test split of HC18: ``NNN_HC``, ``NNN_2HC``, ``NNN_3HC`` are scans of
    subject NNN and stay in one split (no subject in two splits, so test images are of unseen fetuses).
    Subjects are shuffled with numpy's default_rng(seed) and cut at the cumulative subject fractions."""
    stems = _stems(folder)
    subject = {}
    for stem in stems:
        m = re.fullmatch(r"(\d+)_\d*HC", stem)
        if m is None:
            raise ValueError(f"{folder}: unexpected HC18 image name {stem!r} (expected NNN_HC or NNN_kHC)")
        subject[stem] = m.group(1)
    subjects = sorted(set(subject.values()))
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_train = round(fractions[0] * len(subjects))
    n_val = round(fractions[1] * len(subjects))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[subjects[i]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return {stem: split_of[subject[stem]] for stem in stems}


def write_splits(folder: Path, splits: dict[str, str]) -> None:
    """metadata.csv (case_id, split) in the dataset folder: medwb.data.open_dataset joins it automatically."""
    lines = ["case_id,split"] + [f"{cid},{splits[cid]}" for cid in sorted(splits)]
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_all_splits(out: Path) -> None:
    write_splits(out / "segmentation_2d/chase_db1", chase_splits(out / "segmentation_2d/chase_db1"))
    write_splits(out / "segmentation_2d/hc18", hc18_splits(out / "segmentation_2d/hc18"))


def main(src: Path, out: Path = OUT) -> None:
    if out.exists():
        for child in out.iterdir():
            if child.name != "README.md":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    # 2D and 3D classification (MedMNIST npz, whole official files: splits kept)
    d = out / "classification_2d"
    write_licence(d, "pneumoniamnist")
    shutil.copy2(src / "medmnist/pneumoniamnist.npz", d / "pneumoniamnist.npz")
    d = out / "classification_3d"
    write_licence(d, "adrenalmnist3d")
    shutil.copy2(src / "medmnist/adrenalmnist3d.npz", d / "adrenalmnist3d.npz")
    # 2D segmentation: HC18 (outlines to fill) and CHASE_DB1 (two observers)
    n_hc = 40
    d = out / "segmentation_2d/hc18"
    write_licence(d, "hc18", n=n_hc)
    imgs = sorted((src / "seg2d/hc18_subset/images").glob("*.png"))[:n_hc]
    (d / "images").mkdir(parents=True)
    (d / "annotations").mkdir()
    keep = []
    for p in imgs:
        shutil.copy2(p, d / "images" / p.name)
        ann = src / "seg2d/hc18_subset/annotations" / p.name.replace(".png", "_Annotation.png")
        shutil.copy2(ann, d / "annotations" / ann.name)
        keep.append(p.name)
    lines = (src / "seg2d/hc18_subset/pixel_size_and_HC.csv").read_text().splitlines()
    (d / "pixel_size_and_HC.csv").write_text(
        "\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in keep]) + "\n")
    d = out / "segmentation_2d/chase_db1"
    write_licence(d, "chase_db1")
    for sub in ("images", "manual_1stHO", "manual_2ndHO"):
        shutil.copytree(src / "seg2d/chase_db1" / sub, d / sub)
    # 3D segmentation: MSD hippocampus subset, MSD layout with a matching dataset.json
    n_tr, n_ts = 60, 6
    s = src / "seg3d/msd_task04_hippocampus"
    d = out / "segmentation_3d/hippocampus"
    write_licence(d, "hippocampus", n=n_tr, u=n_ts)
    meta = json.loads((s / "dataset.json").read_text())
    training = sorted(meta["training"], key=lambda e: e["image"])[:n_tr]
    test = sorted(meta["test"])[:n_ts]
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (d / sub).mkdir(parents=True)
    for e in training:
        shutil.copy2(s / e["image"], d / e["image"])
        shutil.copy2(s / e["label"], d / e["label"])
    for t in test:
        shutil.copy2(s / t, d / t)
    meta.update(training=training, test=test, numTraining=len(training), numTest=len(test))
    (d / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    # DICOM: pydicom files + DICOMDIR tree, and a JPEG 2000 CT series
    d = out / "dicom"
    write_licence(d, "dicom")
    shutil.copytree(src / "dicom/pydicom", d / "pydicom")
    shutil.copytree(src / "seg3d/totalsegmentator_samples/example_ct_dicom", d / "ct_series")
    shutil.copy2(src / "seg3d/totalsegmentator_samples/example_seg_dicom.nii.gz", d / "ct_series_seg.nii.gz")
    write_all_splits(out)
    for p in out.rglob("*"):
        if p.is_file():
            p.chmod(0o644)
        elif p.is_dir():
            p.chmod(0o755)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", type=Path, default=ROOT.parent / "shared" / "data", help="shared data folder")
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (default: data_samples/)")
    ap.add_argument("--splits-only", action="store_true", help="only (re)write the metadata.csv split files")
    a = ap.parse_args()
    if a.splits_only:
        write_all_splits(a.out)
    else:
        main(a.src, a.out)
