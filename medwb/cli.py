"""``medwb`` command line: parses arguments and calls the modules; no logic of its own.

Each sub-command imports its module lazily so ``medwb --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from medwb.errors import ConfigError, MedwbError


def _cmd_check(a: argparse.Namespace) -> int:
    from medwb.data.check import check_dataset

    report = check_dataset(a.data, near_duplicate_distance=a.near_dup_distance, metadata=a.metadata)
    print(report.to_text())
    return 1 if report.errors else 0


def _cmd_explore(a: argparse.Namespace) -> int:
    from medwb.pipelines.explore import run_explore

    ipynb, html = run_explore(a.data, a.out, max_cases=a.max_cases, study=a.study, plaintext=a.plaintext_outputs)
    print(f"executed notebook: {ipynb}\nHTML report: {html}")
    return 0


def _simulation_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return dict(
        strategies=a.strategy or ["hybrid", "random", "random:scratch"],
        budget=a.budget,
        rounds=a.rounds,
        seeds=a.seeds,
        out_dir=a.out,
        epochs=a.epochs,
        train=dict(a.train or []),
        cold_start=a.cold_start,
        mc_passes=a.mc_passes,
        max_pool=a.max_pool,
        size=a.size,
        progress=not a.quiet,
        pipeline=a.pipeline,
        finetune=a.finetune,
        pretrain_config=_pretrain_config(a),
        scoring=a.scoring,
        stream=a.stream,
        reference_seeds=a.reference_seeds,
        workers=a.workers,
        self_train=a.self_train,
        warm_start=a.warm_start,
    )


def _cmd_simulate(a: argparse.Namespace) -> int:
    from medwb.pipelines.simulate import run_simulation

    run_simulation(a.data, **_simulation_kwargs(a), plaintext=a.plaintext_outputs)
    return 0


def _cmd_class_sweep(a: argparse.Namespace) -> int:
    from medwb.pipelines.class_sweep import run_class_sweep

    table = run_class_sweep(a.data, class_counts=a.classes, **_simulation_kwargs(a), plaintext=a.plaintext_outputs)
    print(table.to_string(index=False))
    return 0


def _counts(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: pass class counts like 2,4,6,8") from None


def parse_warm_start(text: str) -> int | str | None:
    """``--warm-start``: a number of passes, "auto" or "off" (None); also read by the round-timing benchmark."""
    if text in ("auto", "off"):
        return None if text == "off" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number of passes (e.g. 40), auto or off") from None


def _pretrain_config(a: argparse.Namespace) -> dict[str, float] | None:
    """--pretrain-epochs / --pretrain-max-seconds as overrides of the network's own schedule
    (``medwb.models.pretrain.pretrain_config_on``: a 3D or segmentation set keeps its batch and crop), resolved by
    the pipeline on the dataset it opens; None without those flags."""
    over = {k: v for k, v in (("epochs", a.pretrain_epochs), ("max_seconds", a.pretrain_max_seconds)) if v is not None}
    return over or None


def _cmd_pretrain(a: argparse.Namespace) -> int:
    from medwb.al.representation import format_pretrain_summary, pretrain_study
    from medwb.data import open_dataset
    from medwb.models.pretrain import pretrain_config_on
    from medwb.store import Study

    ds = open_dataset(a.data, progress=not a.quiet)
    size = a.size * ds.ndim if a.size is not None and len(a.size) == 1 else a.size
    with Study.open_or_create(a.study, dataset_path=str(a.data), task=ds.task, classes=ds.classes,
                              name=ds.name) as study:
        res, path = pretrain_study(study, ds, config=pretrain_config_on(_pretrain_config(a), ds), size=size,
                                   max_pool=a.max_pool,
                                   progress=not a.quiet, stream=a.stream, workers=a.workers)
    print(format_pretrain_summary(res, path))
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: pass non-negative integers, e.g. 28 or 28,28")
    return values


def _seeds(text: str) -> int | list[int]:
    """``3`` -> seeds 0, 1, 2; ``0,2`` (or a single ``5,``) -> exactly those seeds."""
    if "," not in text:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seeds or a list like 0,2") from None
    return _int_list(text)


def _size(text: str) -> tuple[int, ...]:
    """``64`` (every spatial axis, expanded by the data's dimensionality) or ``64,64`` / ``32x32x32``."""
    values = _int_list(text)
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be >= 1")
    return tuple(values)


def parse_train_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for a TrainConfig field; the value is parsed as int, float or true/false (text fields: as is)."""
    from medwb.models import TrainConfig

    return parse_config_setting(text, TrainConfig)


def parse_config_setting(text: str, config_type: type) -> tuple[str, Any]:
    """``KEY=VALUE`` for a field of the dataclass ``config_type`` (e.g. TrainConfig, PretrainConfig); the value is
    parsed as int, float or true/false (text fields: as is)."""
    from dataclasses import fields

    key, sep, raw = text.partition("=")
    names = {f.name for f in fields(config_type)}
    if not sep or key not in names:
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE with KEY one of {', '.join(sorted(names))}")
    low = raw.strip().lower()
    if low in ("true", "false"):
        return key, low == "true"
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    if isinstance(getattr(config_type(), key), str):
        return key, raw
    raise argparse.ArgumentTypeError(f"{text!r}: the value must be a number or true/false")


def _cmd_bench(a: argparse.Namespace) -> int:
    from medwb.pipelines.benchmark import bench_uncertainty

    bench_uncertainty(a.data, passes=a.passes, max_pool=a.max_pool, out=a.out)
    return 0


def _cmd_score(a: argparse.Namespace) -> int:
    import os

    from medwb.compute import SCHEDULER_ENV, score_pool, write_scores

    client = a.scheduler or ("local" if a.workers else os.environ.get(SCHEDULER_ENV) or None)
    df = score_pool(a.model, a.data, shard_size=a.shard_size, mc_samples=a.mc, seed=a.seed, client=client,
                    workers=a.workers, device=a.device, uncertainty=a.uncertainty)
    print(f"{len(df)} cases scored -> {write_scores(df, a.out)}")
    return 0


def _cmd_explain(a: argparse.Namespace) -> int:
    from medwb.explain.run import run_explain

    run_explain(a.model, a.data, method=a.method, cases=a.cases, out_dir=a.out, select=a.select, split=a.split,
                checks=not a.no_checks, verbose=True, plaintext=a.plaintext_outputs)
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from medwb.report.build import build_report

    paths = build_report(a.study, a.out, pdf=not a.no_pdf, dataset=a.dataset, simulation_curves=a.curves,
                         explain_dir=a.explain, seed=a.seed, n_bootstrap=a.n_bootstrap,
                         plaintext=a.plaintext_outputs)
    for p in paths:
        print(p)
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from medwb.pipelines.demo import run_demo

    run_demo(out_dir=a.out, data=a.data, quick=a.quick)
    return 0


def _region_config(a: argparse.Namespace):  # -> RegionConfig | None
    from medwb.al.regions import RegionConfig

    if a.levels is None and a.compactness is None:
        return None
    try:
        levels = tuple(int(v) for v in a.levels.split(",")) if a.levels else RegionConfig().levels
    except ValueError:
        raise ConfigError(f"--levels {a.levels!r}: give regions per image at each level, e.g. 30,300,3000") from None
    return RegionConfig(levels=levels, compactness=a.compactness)


def _cmd_structure(a: argparse.Namespace) -> int:
    from medwb.pipelines.structure import format_structure, run_structure

    res = run_structure(a.data, a.out, n_clusters=a.clusters, study_dir=a.study, max_pool=a.max_pool,
                        config=_pretrain_config(a), progress=not a.quiet, max_cases=a.max_cases,
                        regions=_region_config(a), prelabel=a.prelabel)
    print(format_structure(res))
    if "clusters" in res:
        print(f"wrote {a.out}/clusters.csv, clusters_summary.csv"
              + (", structure_eval.json" if "correct_share" in res else ""))
    else:
        print(f"wrote {a.out}/regions/ (one NIfTI of region maps per case, manifest.csv)"
              + (", regions_eval.csv" if "click_ratio" in res else ""))
        if "prelabel_cases" in res:
            print(f"wrote {a.out}/prelabels/ (one PNG mask per case, manifest.csv)")
    return 0


def _cmd_review(a: argparse.Namespace) -> int:
    import signal
    import time

    from medwb.pipelines.review_app import ReviewServer

    # a service manager or `kill` stops the command with SIGTERM: leave through `finally`, which stops the app
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    srv = ReviewServer(a.study, a.readers.split(","), adjudicators=(a.adjudicators or "").split(","), host=a.host,
                       port=a.port, lease_seconds=a.lease_seconds).start()
    try:
        print(f"medwb review: serving {a.study} on {srv.url} (Ctrl-C stops it). One link per reader; a link is "
              "that reader's key, give each to its reader only:")
        for reader, link in srv.links.items():
            print(f"  {reader}: {link}", flush=True)
        if a.rounds is not None:
            from medwb.pipelines.review_study import loop_for_study, run_rounds
            from medwb.store import Study

            with Study.open(a.study) as study:
                loop = loop_for_study(study, arm=a.strategy, batch_size=a.batch_size, data=a.data,
                                      progress=not a.quiet, prelabel=a.prelabel)
                run_rounds(loop, rounds=a.rounds, double_reads=a.double_reads, poll_seconds=a.poll_seconds,
                           say=lambda m: print(f"medwb review: {m}", flush=True))
            print(f"medwb review: all {a.rounds} rounds done; the app keeps serving (adjudication, flagged "
                  "cases); Ctrl-C stops it", flush=True)
        while srv.proc is not None and srv.proc.poll() is None:
            time.sleep(1.0)
        print("medwb review: the app stopped", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        srv.stop()


def _cmd_notebooks(a: argparse.Namespace) -> int:
    from medwb.resources import copy_notebooks

    copied, skipped = copy_notebooks(a.dest, overwrite=a.overwrite)
    for p in copied:
        print(f"copied {p}")
    for p in skipped:
        print(f"kept   {p} (exists; --overwrite replaces it)")
    return 0


def _cmd_deid(a: argparse.Namespace) -> int:
    from medwb.privacy.deid import deidentify_path

    summary = deidentify_path(
        a.input, a.output, key_file=a.key_file, shift_dates=a.shift_dates, allow_burned_in=a.allow_burned_in
    )
    print(summary.to_text())
    return 0


def _cmd_purge(a: argparse.Namespace) -> int:
    from medwb.privacy.purge import purge_study

    result = purge_study(a.study, include_models=a.models, dry_run=a.dry_run, actor=a.by)
    print(result.to_text())
    return 0


def _cmd_decrypt(a: argparse.Namespace) -> int:
    from medwb.privacy.outputs import decrypt_output

    print(decrypt_output(a.file, a.out, key_file=a.key_file))
    return 0


def _cmd_encrypt(a: argparse.Namespace) -> int:
    from medwb.privacy.crypto import load_key
    from medwb.store.convert import encrypt_study

    print(encrypt_study(a.study, load_key(a.key_file)).to_text())
    return 0


def _cmd_key(a: argparse.Namespace) -> int:
    from medwb.privacy import os_keyring
    from medwb.privacy.crypto import load_key, new_key

    if a.new == (a.key_file is not None):
        raise ConfigError("medwb key store: pass exactly one of --key-file PATH (an existing key) or --new. "
                          "Fix: e.g. medwb key store --keyring medwb-site --new")
    key = new_key("a new key") if a.new else load_key(a.key_file)
    where = os_keyring.store_key(a.keyring, key, overwrite=a.overwrite)
    print(f"the key from {key.source} is in the OS keyring as {where}. Use it with: export MEDWB_KEY_KEYRING="
          f"{a.keyring}" + (" (it exists nowhere else: keep a backup, e.g. in a password manager)" if a.new else ""))
    return 0


def _cmd_audit(a: argparse.Namespace) -> int:
    from pathlib import Path

    from medwb.privacy.audit import check_audit_log
    from medwb.store.layout import StudyLayout

    target = Path(a.study)  # a study folder (even one deleted since) or the log file itself
    check = check_audit_log(target if target.suffix == ".jsonl" else StudyLayout(target).purge_audit)
    print(check.to_text())
    return 0


def _pretrain_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--finetune", choices=["head", "full"], default="full",
                   help="pretrained arms: fine-tune everything (default) or train the head on the frozen trunk")
    s.add_argument("--pretrain-epochs", type=int, default=None,
                   help="SimCLR epochs (default: as many as 600 optimiser steps need; fewer for a quick run)")
    s.add_argument("--pretrain-max-seconds", type=float, default=None,
                   help="wall-clock cap of pretraining (an unfinished run is resumed next time)")


def _simulation_args(s: argparse.ArgumentParser) -> None:
    """The options of `medwb simulate` (shared by `medwb class-sweep`)."""
    s.add_argument("data")
    s.add_argument("--strategy", action="append", metavar="STRATEGY[:PIPELINE]",
                   help="an arm (repeatable): acquisition strategy, optionally with its training pipeline, e.g. "
                        "hybrid, random, random:scratch (pipelines: medwb, pretrained, semi, scratch)")
    s.add_argument("--budget", type=float, default=0.1, help="final fraction of the pool labelled")
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--seeds", type=_seeds, default=3,
                   help="number of seeds K (0..K-1), or a list like 0,2 (parallel processes on one --out)")
    s.add_argument("--epochs", type=int, default=None, help="training epochs per round (default: model's)")
    s.add_argument("--train", type=parse_train_setting, action="append", metavar="KEY=VALUE",
                   help="other training setting (repeatable), e.g. --train batch_size=8 --train patience=10; "
                        "keys: the fields of medwb.models.TrainConfig")
    s.add_argument("--max-pool", type=int, default=None,
                   help="use at most this many pool (train split) cases, seeded subsample (default: all)")
    s.add_argument("--size", type=_size, default=None,
                   help="spatial size the images are resized to, e.g. 64,64 or 32x32x32; one number = every axis "
                        "(default: native size for fixed-size classification, else the median shape capped)")
    s.add_argument("--mc-passes", type=int, default=20, help="MC dropout passes for uncertainty scoring")
    s.add_argument("--scoring", default=None, metavar="WHERE",
                   help="where each round's model scores the pool: memory (default: the pool's arrays in this "
                        "process), shards (in this process, shard by shard from the files), local (a Dask "
                        "LocalCluster of single-thread worker processes) or a scheduler address tcp://HOST:PORT")
    s.add_argument("--stream", action="store_true",
                   help="the rounds never hold the pool in memory: cases are read from the files when needed "
                        "(pretraining and FixMatch batch by batch; scoring shards unless --scoring says otherwise)")
    s.add_argument("--cold-start", default="auto", help="strategy of the first, model-free batch (auto: the "
                   "label-free cold start for 2D classification, random in 3D and for segmentation)")
    s.add_argument("--reference-seeds", type=int, default=None, metavar="N",
                   help="train the all-labels references for the first N seeds only (default: every seed)")
    s.add_argument("--self-train", action=argparse.BooleanOptionalAction, default=None,
                   help="each round of the medwb arms also trains a student on the labels + the round model's "
                        "pseudo-labels of the pool (classification: the auto-label rule's; segmentation: every "
                        "image's mask), kept unless validation prefers the round model; default: segmentation "
                        "only")
    s.add_argument("--warm-start", type=parse_warm_start, default="auto", metavar="PASSES|auto|off",
                   help="classification: each round after the first of the medwb arms continues the last round's "
                        "model for PASSES passes over the grown labelled set (40: about half a BloodMNIST round's "
                        "training, the same accuracy) instead of training from the pretrained trunk again; auto "
                        "(the default): 40 passes, only in rounds of 512 labels or more (2D), where a fresh start "
                        "trains 80 passes in epochs of 1-2 passes; off: never")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the (arm, seed) units in N processes of one thread each (2 on 2 cores: ~0.65x the "
                        "time); not with a Dask --scoring")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--pipeline", choices=["medwb", "pretrained", "semi", "scratch"], default="medwb",
                   help="training pipeline of arms given without one: medwb (default: SimCLR pretraining on the "
                        "pool once, shared by every arm, then rounds from the pretrained trunk with FixMatch unless supervised training validates clearly better), "
                        "pretrained (supervised rounds from it), semi (FixMatch from scratch), scratch (supervised "
                        "from random init); a pretrained arm adds the full-pretrained reference")
    _pretrain_args(s)
    s.add_argument("--out", required=True)


#: the label-free pre-label kinds (medwb.al.prelabels.LABEL_FREE's keys, named here so the parser stays light
#: to import; tests/test_cli.py checks that they agree)
PRELABELS = ("ellipse", "vessels")
PLAINTEXT_HELP = ("encrypted study: write the outputs in clear (an HTML report opens in a browser); they leave the "
                  "protected zone, are registered for medwb purge, and a warning says so (default: encrypted, "
                  "opened with medwb decrypt FILE --out DEST)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medwb", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"medwb {__import__('medwb').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("check", help="data-quality report for a dataset; exits non-zero on errors")
    s.add_argument("data", help="dataset: .npz, NIfTI folder, DICOM folder/DICOMDIR or image folder")
    s.add_argument("--near-dup-distance", type=int, default=4,
                   help="perceptual-hash Hamming distance counted as a near duplicate (default 4)")
    s.add_argument("--metadata", default=None,
                   help="CSV with a case_id column (sex, age, site, ...) joined onto the cohort "
                        "(default: DATA/metadata.csv when present)")
    s.set_defaults(func=_cmd_check)

    s = sub.add_parser("explore", help="run the bundled 01_explore notebook on a dataset (executed notebook + HTML)")
    s.add_argument("data")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--max-cases", type=int, default=2000, help="cases used for statistics and duplicates")
    s.add_argument("--study", default=None,
                   help="the study these outputs belong to: registered there for medwb purge (and encrypted when the "
                        "study is); without it they belong to no study and no purge removes them (encrypted when a "
                        "key is configured)")
    s.add_argument("--plaintext-outputs", action="store_true",
                   help="with an encrypted study or a configured key: write the notebook and HTML in clear (they "
                        "leave the protected zone; a warning says so, and without --study that no purge finds them)")
    s.set_defaults(func=_cmd_explore)

    s = sub.add_parser("simulate", help="active-learning simulation with a ground-truth oracle -> curves.csv")
    _simulation_args(s)
    s.add_argument("--plaintext-outputs", action="store_true", help=PLAINTEXT_HELP)
    s.set_defaults(func=_cmd_simulate)

    s = sub.add_parser("class-sweep", help="labels needed vs number of classes: simulate nested class subsets "
                                           "(MedMNIST-layout NPZ) -> class_sweep.csv / .png")
    s.add_argument("--classes", type=_counts, default=[2, 4, 6, 8],
                   help="class counts, e.g. 2,4,6,8 (nested subsets of a seeded class order)")
    _simulation_args(s)
    s.add_argument("--plaintext-outputs", action="store_true", help=PLAINTEXT_HELP)
    s.set_defaults(func=_cmd_class_sweep)

    s = sub.add_parser("pretrain", help="self-supervised pretraining on a study's pool, cached in the study")
    s.add_argument("data")
    s.add_argument("--study", required=True, help="study folder (created when missing)")
    s.add_argument("--size", type=_size, default=None, help="input size (default: the loop's, see simulate --size)")
    s.add_argument("--max-pool", type=int, default=None, help="pool subset of a new study (as in simulate)")
    s.add_argument("--epochs", dest="pretrain_epochs", type=int, default=None,
                   help="pretraining epochs (default: as many as 600 optimiser steps need)")
    s.add_argument("--max-seconds", dest="pretrain_max_seconds", type=float, default=None,
                   help="stop after the epoch that crosses this; the next call resumes")
    s.add_argument("--stream", action="store_true",
                   help="read the pool batch by batch from its files instead of holding it in memory (a pool "
                        "larger than RAM; the same result)")
    s.add_argument("--workers", type=int, default=0,
                   help="with --stream: processes that read the next batches ahead (default 0: this process)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_pretrain)

    s = sub.add_parser("structure", help="the structure model before any label: clusters of similar cases in the "
                                         "self-supervised embedding -> clusters.csv (classification); regions of "
                                         "each image for region-click annotation -> regions/ (segmentation)")
    s.add_argument("data")
    s.add_argument("--out", required=True, help="output folder (clusters.csv, clusters_summary.csv, "
                                                "structure_eval.json when the data has labels; regions/ and "
                                                "regions_eval.csv for segmentation)")
    s.add_argument("--max-cases", type=int, default=None, help="segmentation: regions of a seeded subset only")
    s.add_argument("--levels", default=None, help="segmentation: regions per image at each level, coarse to fine "
                                                  "(default 30,300,3000; thin structures such as vessels need a "
                                                  "fine level like 40000)")
    s.add_argument("--compactness", type=float, default=None, help="segmentation: SLIC compactness (default 0.1 "
                                                                   "in 2D, 0.5 in 3D)")
    s.add_argument("--prelabel", choices=PRELABELS, default=None,
                   help="2D segmentation: also write a label-free pre-label mask per case to OUT/prelabels/ "
                        "(ellipse: the best bright elliptical ring, e.g. a fetal skull; vessels: the dark thin "
                        "ridges of a fundus photo), scored where masks exist")
    s.add_argument("--clusters", type=int, default=None, help="number of clusters (default: one per 100 pool cases)")
    s.add_argument("--study", default=None, help="study folder whose cached pretraining to use (default: OUT/study)")
    s.add_argument("--max-pool", type=int, default=None, help="pool subset of a new study (as in simulate)")
    s.add_argument("--pretrain-epochs", type=int, default=None, help="pretraining epochs (default: 600 steps)")
    s.add_argument("--pretrain-max-seconds", type=float, default=None, help="stop pretraining after this")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_structure)

    s = sub.add_parser("bench", help="benchmarks (uncertainty: MC dropout cost against baal and a plain pass)")
    s.add_argument("what", choices=["uncertainty"])
    s.add_argument("data")
    s.add_argument("--passes", type=int, default=20)
    s.add_argument("--max-pool", type=int, default=None)
    s.add_argument("--out", default=None, help="also write the table as CSV here")
    s.set_defaults(func=_cmd_bench)

    s = sub.add_parser("score", help="score every case of a pool (prediction, MC uncertainty, embedding) -> Parquet, "
                       "in this process or on Dask")
    s.add_argument("model", help="study folder (its latest model) or model checkpoint")
    s.add_argument("data", help="dataset (the Dask workers read it from this path)")
    s.add_argument("--out", required=True, help="Parquet file to write (one row per case)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="start a local Dask cluster of N single-thread worker processes (stopped after)")
    where.add_argument("--scheduler", default=None,
                       help="address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786 (default: "
                       "$MEDWB_DASK_SCHEDULER; neither: score in this process)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--mc", type=int, default=20, help="MC-dropout passes (default 20)")
    s.add_argument("--shard-size", type=int, default=512, help="cases per task (default 512)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--uncertainty", default="entropy", help="entropy (default), bald, variance, mean_std, ...")
    s.set_defaults(func=_cmd_score)

    s = sub.add_parser("explain", help="attribution maps, overlays and sanity checks")
    s.add_argument("model", help="study folder or model checkpoint")
    s.add_argument("data")
    s.add_argument("--method", default="gradcam",
                   help="gradcam, gradcampp, ig, occlusion, saliency; a comma list or 'all'")
    s.add_argument("--cases", type=int, default=16)
    s.add_argument("--out", required=True)
    s.add_argument("--select", default="uncertain",
                   help="uncertain | misclassified | random | subgroup:COLUMN=VALUE (default uncertain)")
    s.add_argument("--split", default=None, help="dataset split (default: test, else val, train, unlabelled)")
    s.add_argument("--no-checks", action="store_true", help="skip the sanity/faithfulness checks")
    s.add_argument("--plaintext-outputs", action="store_true", help=PLAINTEXT_HELP)
    s.set_defaults(func=_cmd_explain)

    s = sub.add_parser("report", help="validation report (executed notebook, HTML, PDF) for a study")
    s.add_argument("study")
    s.add_argument("--out", required=True)
    s.add_argument("--no-pdf", action="store_true")
    s.add_argument("--dataset", default=None, help="dataset path (default: the one recorded in the study)")
    s.add_argument("--curves", default=None,
                   help="curves.csv of `medwb simulate` (default: found beside the study when it is OUT/studies/NAME)")
    s.add_argument("--explain", default=None,
                   help="output folder of `medwb explain` (default: STUDY/exports/explain when present)")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    s.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    s.add_argument("--plaintext-outputs", action="store_true", help=PLAINTEXT_HELP)
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("demo", help="the end-to-end study on bundled real data, ending in a report")
    s.add_argument("--out", default="reports")
    s.add_argument("--data", default=None,
                   help="dataset to use instead of the bundled PneumoniaMNIST (medwb.resources.DEMO_DATA)")
    s.add_argument("--quick", action="store_true", help="smaller study, for tests")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("review", help="the code-free review app (Voila) for readers: one link with a token each")
    s.add_argument("study", help="study folder (its open round's cases are read)")
    s.add_argument("--readers", required=True, help="comma-separated reader names, e.g. ana,ben")
    s.add_argument("--adjudicators", default="",
                   help="comma-separated senior readers who decide double reads that disagree (study.set_reads)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1, this machine only; 0.0.0.0 for a hospital LAN)")
    s.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    s.add_argument("--lease-seconds", type=float, default=600.0,
                   help="how long a case stays with a reader who does not decide it (default 600)")
    s.add_argument("--rounds", type=int, default=None,
                   help="also run the rounds: propose, wait for the readers, retrain, next round, until the study has "
                        "this many finished rounds (no notebook needed)")
    s.add_argument("--strategy", default="hybrid", help="with --rounds: STRATEGY[:PIPELINE] as in simulate "
                                                        "(default hybrid = medwb's default pipeline)")
    s.add_argument("--batch-size", type=int, default=32, help="with --rounds: cases per round (default 32)")
    s.add_argument("--prelabel", choices=PRELABELS, default=None,
                   help="with --rounds, 2D segmentation: the first round's readers start from a label-free "
                        "pre-label mask (ellipse: the best bright elliptical ring, e.g. a fetal skull; vessels: "
                        "the dark thin ridges of a fundus photo)")
    s.add_argument("--double-reads", type=int, default=0,
                   help="with --rounds: cases per round read blind by two readers (agreement, adjudication)")
    s.add_argument("--data", default=None, help="with --rounds: the dataset, if it moved since the study was made")
    s.add_argument("--poll-seconds", type=float, default=5.0, help="with --rounds: how often the store is read")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_review)

    s = sub.add_parser("notebooks", help="copy the bundled notebooks into a folder, to open them in JupyterLab")
    s.add_argument("dest", help="folder to copy them into (created)")
    s.add_argument("--overwrite", action="store_true", help="replace notebooks that already exist there")
    s.set_defaults(func=_cmd_notebooks)

    s = sub.add_parser("deid", help="de-identify DICOM / NIfTI (PS3.15 Annex E basic profile)")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--key-file", default=None, help="secret key for UID hashing and the encrypted identity map")
    s.add_argument("--shift-dates", action="store_true", help="shift dates by a per-patient offset")
    s.add_argument("--allow-burned-in", action="store_true", help="keep files flagged with burned-in annotation")
    s.set_defaults(func=_cmd_deid)

    s = sub.add_parser("purge", help="remove a study's data (overwrite, unlink) and write an audit record")
    s.add_argument("study")
    s.add_argument("--models", action="store_true", help="also remove models trained on the data")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--by", default=None, help="who purges (default: the OS user)")
    s.set_defaults(func=_cmd_purge)

    s = sub.add_parser("encrypt", help="convert a plain study into an encrypted one (SQLCipher database, AES-GCM "
                                      "files, pseudonymous file names); re-run it to finish an interrupted one")
    s.add_argument("study")
    s.add_argument("--key-file", default=None,
                   help="the key (default: $MEDWB_KEY_FILE, $MEDWB_KEY, then the keyring of $MEDWB_KEY_KEYRING); "
                        "keep it outside the study")
    s.set_defaults(func=_cmd_encrypt)

    s = sub.add_parser("key", help="put a medwb key into the OS keyring (then: export MEDWB_KEY_KEYRING=SERVICE)")
    s.add_argument("action", choices=["store"])
    s.add_argument("--keyring", required=True, metavar="SERVICE", help="the keyring service name (user: medwb)")
    s.add_argument("--key-file", default=None, help="the key file to store (e.g. the one your studies use)")
    s.add_argument("--new", action="store_true", help="store a new random key (it exists only in the keyring)")
    s.add_argument("--overwrite", action="store_true", help="replace another key stored under SERVICE")
    s.set_defaults(func=_cmd_key)

    s = sub.add_parser("audit", help="check a study's purge audit log against its key and anchor")
    s.add_argument("action", choices=["verify"])
    s.add_argument("study", help="study folder (or its purge_audit.jsonl)")
    s.set_defaults(func=_cmd_audit)

    s = sub.add_parser("decrypt", help="a clear copy of one encrypted output (report, simulation table, map)")
    s.add_argument("file", help="a file whose content starts with MEDWBENC1")
    s.add_argument("--out", required=True, help="where the clear copy goes (it leaves the protected zone)")
    s.add_argument("--key-file", default=None,
                   help="the key (default: the study holding FILE, else $MEDWB_KEY_FILE / $MEDWB_KEY)")
    s.set_defaults(func=_cmd_decrypt)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MedwbError as e:
        print(f"medwb {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
