"""Issue 13's time targets: over-segmenting a 3D hippocampus crop <= 1 s and a 999x960 fundus photo <= 2 s.

    python benchmarks/structure/bench_region_time.py DATA_ROOT [--out benchmarks/structure/region_time.md]

For each image of CHASE_DB1 (all 28 photos, 999x960 RGB; the default levels and the finer vessel levels the
region benchmark uses), the first 30 MSD hippocampus crops and the first 30 HC18 images, ``over_segment`` runs
twice on the image as ``Dataset.load_image`` gives it: one level after the other (``threads=1``, the reference)
and with its levels on threads (``threads=None``, the default: one per level when the process may use two
cores or more). Both
must give the same maps (checked on every image). Wall seconds of each, the process CPU seconds of the
reference, median and max over the images. Run it on an otherwise idle machine: with another job on the cores
the threaded wall time cannot drop.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MEDWB_OFFLINE", "1")

CASES = [  # label, relative path, max images, levels (None: default), compactness (None: default), target s
    ("CHASE_DB1 fundus 999x960, default levels", "seg2d/chase_db1", None, None, None, 2.0),
    ("CHASE_DB1 fundus 999x960, levels 300/3000/40000 c=2", "seg2d/chase_db1", None, (300, 3000, 40000), 2.0, 2.0),
    ("MSD hippocampus crop (3D), default levels", "seg3d/msd_task04_hippocampus", 30, None, None, 1.0),
    ("HC18 ultrasound, default levels", "seg2d/hc18_subset", 30, None, None, None),
]


def measure(root: Path, label: str, rel: str, limit: int | None, levels, compactness) -> dict[str, object]:
    from medwb.al.regions import RegionConfig, level_threads, over_segment, spacing_of
    from medwb.data import open_dataset

    ds = open_dataset(root / rel, progress=False)
    ids = ds.case_ids()[:limit] if limit else ds.case_ids()
    cfg = RegionConfig(**({"levels": tuple(levels)} if levels else {}), compactness=compactness)
    serial, threaded, cpu, same, shape = [], [], [], True, None
    over_segment(ds.load_image(ids[0]), spacing_of(ds, ids[0]), config=cfg)  # imports and caches paid
    for cid in ids:
        image, spacing = ds.load_image(cid), spacing_of(ds, cid)
        shape = image.shape
        t, c = time.perf_counter(), time.process_time()
        one = over_segment(image, spacing, config=cfg, threads=1)
        serial.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        t = time.perf_counter()
        many = over_segment(image, spacing, config=cfg)
        threaded.append(time.perf_counter() - t)
        same &= bool(np.array_equal(one, many))
    cfg = cfg.resolved(len(shape) - 1)
    return {"label": label, "images": len(ids), "shape": "x".join(map(str, shape)), "levels": cfg.levels,
            "threads": level_threads(len(cfg.levels)), "serial": serial, "threaded": threaded, "cpu": cpu,
            "same": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_root")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "region_time.md"))
    a = ap.parse_args()
    import torch

    from medwb.compute.cluster import usable_cores

    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = [measure(Path(a.data_root), *case[:5]) for case in CASES]
    med = lambda v: f"{np.median(v):.2f} / {np.max(v):.2f}"  # noqa: E731
    lines = ["# Over-segmentation time per image (medwb.al.regions.over_segment)", "",
             "Command: `python benchmarks/structure/bench_region_time.py DATA_ROOT`", "",
             (__doc__ or "").split("\n\n")[2].replace("\n", " "), "",
             f"Machine: {usable_cores()} usable cores ({os.uname().machine}), load average before the run "
             f"{load:.1f} (its own threads: {os.getloadavg()[0]:.1f} at the end).", "",
             "| images | n | image (C, spatial) | levels | target s | levels one by one: wall s (median / max) | "
             "CPU s | levels on threads: wall s (median / max) | threads | speed-up (median) | same maps |",
             "|" + "---|" * 11]
    for r, case in zip(rows, CASES):
        target = case[5]
        lines.append(f"| {r['label']} | {r['images']} | {r['shape']} | {'/'.join(map(str, r['levels']))} | "
                     f"{'' if target is None else f'≤ {target:g}'} | {med(r['serial'])} | {med(r['cpu'])} | "
                     f"{med(r['threaded'])} | {r['threads']} | "
                     f"{np.median(r['serial']) / np.median(r['threaded']):.2f}x | {'yes' if r['same'] else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
