"""fit_round: with semi, FixMatch and supervised training from the same start, the better on validation kept."""
from __future__ import annotations

import numpy as np

from medwb.al.fit import FIXMATCH_MARGIN, fit_round, keeps_fixmatch, validation_score
from medwb.models import TrainConfig, build_classifier


def _blobs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    X = rng.normal(0.3, 0.1, (n, 1, 16, 16)).astype(np.float32)
    X[y == 1, :, 4:10, 4:10] += 0.5  # class 1: a bright square
    return X.clip(0, 1), y


def test_semi_round_trains_both_and_keeps_the_better_on_validation() -> None:
    rng = np.random.default_rng(0)
    (X, y), (Xu, _), val, test = _blobs(16, rng), _blobs(64, rng), _blobs(40, rng), _blobs(40, rng)
    cfg = TrainConfig(epochs=3, min_epochs=1, batch_size=8, seed=0)
    model, m = fit_round(build_classifier(2, 1, 2, channels=(4, 8)), X, y, val, task="classification",
                         config=cfg, semi=True, X_unlabelled=Xu, test=test, progress=False)
    assert {"val_score_supervised", "val_score_semi"} <= set(m)
    kept_semi = m["val_score_semi"] > m["val_score_supervised"] - FIXMATCH_MARGIN  # a close call goes to FixMatch
    assert m["semi"] == float(kept_semi)
    assert validation_score(m) == m["val_score_semi" if kept_semi else "val_score_supervised"]  # the kept one's
    # a simulation's audit: both candidates' test metrics, the kept one's equal to the round's own
    kept = "semi" if kept_semi else "supervised"
    assert {"test_auc_supervised", "test_auc_semi"} <= set(m) and m[f"test_auc_{kept}"] == m["test_auc"]
    sup, m_sup = fit_round(build_classifier(2, 1, 2, channels=(4, 8)), X, y, val, task="classification",
                           config=cfg, semi=False, progress=False)
    assert m_sup["semi"] == 0.0 and "val_score_semi" not in m_sup
    # the supervised candidate is the same training as semi=False (same start, same seed)
    assert m_sup["val_auc"] == (m["val_auc"] if not kept_semi else m_sup["val_auc"])
    assert validation_score({"val_auc": float("nan"), "val_balanced_accuracy": 0.5}) == 0.5
    # supervised training must lead clearly to be kept; within the margin FixMatch stays
    assert keeps_fixmatch(0.95, 0.955) and keeps_fixmatch(0.96, 0.95) and not keeps_fixmatch(0.94, 0.95)


def test_fixmatch_is_dropped_once_supervised_training_beat_it(tmp_path, samples) -> None:
    import torch

    from medwb.al.fit import fixmatch_still_ahead
    from medwb.store import Study

    s = Study.create(tmp_path / "s", dataset_path=samples / "classification_2d" / "pneumoniamnist.npz",
                     task="classification", classes={0: "normal", 1: "pneumonia"})
    assert fixmatch_still_ahead(s)  # no model yet
    cp = tmp_path / "m.pt"
    torch.save({}, cp)
    # a round without FixMatch (after the clear loss) does not bring it back: the last round that trained both decides
    for rnd, (semi, sup, ahead) in enumerate([(None, None, True), (0.92, 0.90, True), (0.90, 0.905, True),
                                              (0.90, 0.93, False), (None, None, False), (None, None, False)], 1):
        s.start_round(rnd, "random", {}, [], [])
        metrics = {"n_labeled": 10.0 * rnd} | ({} if semi is None else {"val_score_semi": semi,
                                                                        "val_score_supervised": sup})
        s.add_model(rnd, cp, metrics)
        assert fixmatch_still_ahead(s) is ahead


def test_semi_schedule_overrides_fixmatch_and_is_checked_up_front(monkeypatch) -> None:
    """A round's FixMatch settings beyond TrainConfig (the demo's shorter epochs) reach train_semi; an unknown or
    invalid one is a clear error before any round, naming the fields to use."""
    import pytest

    import medwb.models.semi as semi_module
    from medwb.al.fit import check_semi_schedule
    from medwb.errors import DataError

    cfg = TrainConfig(epochs=2, min_epochs=1, batch_size=8, seed=0)
    assert check_semi_schedule(cfg, None) == {}
    assert check_semi_schedule(cfg, {"steps_per_epoch": 4, "mu": 2}) == {"steps_per_epoch": 4, "mu": 2}
    with pytest.raises(DataError, match="steps_per_epok.*steps_per_epoch"):
        check_semi_schedule(cfg, {"steps_per_epok": 4})
    with pytest.raises(DataError, match="mu=0"):
        check_semi_schedule(cfg, {"mu": 0})
    seen = []
    real = semi_module.train_semi

    def spy(*args, config, **kw):
        seen.append(config)
        return real(*args, config=config, **kw)

    monkeypatch.setattr(semi_module, "train_semi", spy)
    rng = np.random.default_rng(1)
    (X, y), (Xu, _), val = _blobs(16, rng), _blobs(64, rng), _blobs(40, rng)
    _, m = fit_round(build_classifier(2, 1, 2, channels=(4, 8)), X, y, val, task="classification", config=cfg,
                     semi=True, X_unlabelled=Xu, progress=False, semi_schedule={"steps_per_epoch": 3, "mu": 2})
    assert "val_score_semi" in m
    assert [(c.steps_per_epoch, c.mu, c.epochs, c.seed) for c in seen] == [(3, 2, 2, 0)]  # the rest from cfg


def test_members_round_is_the_mean_of_separately_seeded_networks() -> None:
    import pytest
    import torch

    from medwb.al.fit import MEMBER_SEED_STEP, continued_passes
    from medwb.errors import DataError
    from medwb.models import evaluate, predict_proba

    rng = np.random.default_rng(1)
    (X, y), val, test = _blobs(24, rng), _blobs(40, rng), _blobs(40, rng)
    cfg = TrainConfig(epochs=3, min_epochs=1, batch_size=8, seed=3)
    single, m1 = fit_round(build_classifier(2, 1, 2, channels=(4, 8), seed=3), X, y, val, task="classification",
                           config=cfg, test=test, progress=False)
    ens, m = fit_round(build_classifier(2, 1, 2, channels=(4, 8), seed=3), X, y, val, task="classification",
                       config=TrainConfig(**{**cfg.__dict__, "members": 2}), test=test, progress=False)
    assert ens.build_args["kind"] == "ensemble"
    assert [a["seed"] for a in ens.build_args["members"]] == [3, 3 + MEMBER_SEED_STEP]
    # member 0 is the single-network round (same build, same seed); member 1 is another network
    x = torch.as_tensor(test[0])
    with torch.no_grad():
        outs = [h(t(x)) for t, h in zip(ens.trunk.members, ens.head.members)]
        assert torch.allclose(outs[0], single(x), atol=1e-6)
        assert not torch.allclose(outs[1], outs[0], atol=1e-3)
    expected = torch.stack([torch.softmax(o, 1) for o in outs]).mean(0).numpy()
    np.testing.assert_allclose(predict_proba(ens, test[0]), expected, atol=1e-5)
    # the decision rule is chosen again on the ensemble's validation probabilities; metrics are the ensemble's
    assert set(ens.decision) == {"threshold"}
    assert m["test_auc"] == pytest.approx(evaluate(ens, *test)["auc"])
    assert m["val_balanced_accuracy"] == pytest.approx(evaluate(ens, *val)["balanced_accuracy"])
    assert m["n_labeled"] == 24 and m["train_seconds"] > m1["train_seconds"] * 0.5 and m["semi"] == 0.0
    # an ensemble round never continues the last model, and 0 members is no network
    assert continued_passes(40, False, False, n_labels=600, config=TrainConfig(members=2)) is None
    assert continued_passes(40, False, False, n_labels=600, config=TrainConfig()) == 40
    with pytest.raises(DataError, match="members=0"):
        TrainConfig(members=0)
