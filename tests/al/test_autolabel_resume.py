"""A round killed after its proposal keeps its auto-label statistics when resumed (issue 16: the resumed study
lost them: the model's ``autolabel_*`` metrics, hence the ``autolabel.csv`` rows, described only the cases left).
The kill is a real SIGKILL of a child process in the middle of the round."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from _fixtures import tiny_pneumonia_loop

#: a short schedule: the test is about the round's statistics surviving a kill, not about the model's quality
QUICK = {"epochs": 3, "min_epochs": 1, "batch_size": 8, "seed": 0}

CHILD = """
import os, signal, sys
from medwb.al.loop import ActiveLearningLoop
from medwb.al.oracle import LabelAnswer
from medwb.data import open_dataset
from medwb.models import TrainConfig
from medwb.store import Study
ds = open_dataset(sys.argv[2], progress=False)
loop = ActiveLearningLoop(Study.open(sys.argv[1]), ds, strategy="entropy", batch_size=4, seed=0, progress=False,
                          pretrain=False, semi=False, train_config=TrainConfig(**{CONFIG}))
batch = loop.propose()
truth = dict(zip(ds.cohort.case_id.astype(str), ds.cohort.label))
cid = str(batch.case_id.iloc[0])
loop.save_label(cid, LabelAnswer(value=int(truth[cid]), source="human", annotator="sim"))
os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of round 2: one of its 4 labels saved
""".replace("{CONFIG}", repr(QUICK))


def test_killed_round_keeps_its_autolabel_statistics(samples: Path, tmp_path: Path) -> None:
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import LabelAnswer, simulated_oracle
    from medwb.pipelines.simulate import autolabel_from_study
    from medwb.store import Study

    from medwb.models import TrainConfig

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path, n_train=30, batch_size=4, train_config=TrainConfig(**QUICK))
    loop.run(1, simulated_oracle(ds))  # round 1 (cold start) finished: round 2 pre-labels with its model
    study.close()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "s"), str(tmp_path / "p.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    study = Study.open(tmp_path / "s")
    try:
        kept = study.rounds().set_index("number").loc[2, "params"]["autolabel_stats"]
        assert kept["autolabel_n"] == 4  # measured on the whole batch at the first proposal
        loop = ActiveLearningLoop(study, ds, strategy="entropy", batch_size=4, seed=0, progress=False,
                                  pretrain=False, semi=False, train_config=TrainConfig(**QUICK))
        rest = loop.propose()
        assert len(rest) == 3  # the label saved before the kill is kept
        truth = dict(zip(ds.cohort.case_id.astype(str), ds.cohort.label))
        for cid in rest.case_id.astype(str):
            loop.save_label(cid, LabelAnswer(value=int(truth[cid]), source="human", annotator="sim"))
        result = loop.complete()
        assert result.round == 2
        for k, v in kept.items():
            assert result.metrics[k] == v, k
        rows = autolabel_from_study(study, strategy="entropy", seed=0)
        assert int(rows.set_index("round").loc[2, "n_batch"]) == 4  # the autolabel.csv row of the killed round
    finally:
        study.close()
