"""Issue 16: a simulation's tables and a report of an encrypted study leave the protected zone only by choice.

By default they are written encrypted (``MEDWBENC1``; ``medwb decrypt FILE --out DEST`` gives a clear copy);
with ``plaintext=True`` / ``--plaintext-outputs`` they are in clear (the HTML opens in a browser), registered for
purge, and one warning line says they left the protected zone. A real in-process simulation on PneumoniaMNIST,
then the real report notebook on one of its studies."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.cli import main
from medwb.pipelines.simulate import OUTPUT_FILES, run_simulation
from medwb.privacy.crypto import MAGIC, generate_key
from medwb.store import Study, cipher

SIM = dict(strategies=["random:scratch"], budget=0.4, rounds=1, seeds=[0], epochs=1, max_pool=30, size=(16, 16),
           mc_passes=2, progress=False)


@pytest.fixture(scope="module")
def encrypted_sim(tmp_path_factory, samples: Path):
    """(data, simulation folder, key file) of a simulation run with a key configured (encrypted studies)."""
    tmp = tmp_path_factory.mktemp("encsim")
    key_file = Path(generate_key(tmp / "keys" / "site.key").source)
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp / "p.npz", n_train=60, n_val=20, n_test=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MEDWB_KEY", raising=False)
        mp.setenv("MEDWB_KEY_FILE", str(key_file))
        run_simulation(data, out_dir=tmp / "sim", **SIM)
    return data, tmp / "sim", key_file


@pytest.fixture()
def key_env(monkeypatch, encrypted_sim) -> Path:
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    monkeypatch.setenv("MEDWB_KEY_FILE", str(encrypted_sim[2]))
    return encrypted_sim[2]


@pytest.mark.slow
def test_simulation_outputs_are_encrypted_and_decrypt_with_the_cli(encrypted_sim, key_env, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    _, sim, key_file = encrypted_sim
    for name in OUTPUT_FILES:
        raw = (sim / name).read_bytes()
        assert raw.startswith(MAGIC) and b"strategy" not in raw and b"\x89PNG" not in raw, name
    assert Study.open(sim / "studies" / "random-scratch-seed0").encrypted
    monkeypatch.delenv("MEDWB_KEY_FILE")  # decrypt with an explicit key file
    assert main(["decrypt", str(sim / "curves.csv"), "--out", str(tmp_path / "c.csv"), "--key-file",
                 str(key_file)]) == 0
    curves = pd.read_csv(tmp_path / "c.csv")
    assert {"random-scratch", "full"} <= set(curves["strategy"])
    cipher.UNLOCKED.pop(str(sim.resolve()), None)  # as in a new process
    assert main(["decrypt", str(sim / "curves.png"), "--out", str(tmp_path / "c.png")]) == 2  # no key: named error
    assert "no key is configured" in capsys.readouterr().err and not (tmp_path / "c.png").exists()


@pytest.mark.slow
def test_plaintext_simulation_outputs_are_clear_registered_and_warned(encrypted_sim, key_env, tmp_path,
                                                                      capsys) -> None:
    data, shared, _ = encrypted_sim
    sim = tmp_path / "sim"  # a copy: the module's encrypted simulation stays as the other tests expect, in any order
    shutil.copytree(shared, sim)
    run_simulation(data, out_dir=sim, plaintext=True, **SIM)  # the studies are done: only the tables are written
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "left the protected zone" in err and "curves.csv" not in err
    assert pd.read_csv(sim / "curves.csv")["strategy"].nunique() >= 2  # in clear
    assert (sim / "curves.png").read_bytes().startswith(b"\x89PNG")
    with Study.open(sim / "studies" / "random-scratch-seed0") as st:
        registered = set(st.artifacts()["path"])
    assert {str((sim / f).resolve()) for f in OUTPUT_FILES} <= registered


@pytest.mark.slow
def test_report_of_an_encrypted_study_is_encrypted_unless_asked(encrypted_sim, key_env, tmp_path, capsys) -> None:
    from medwb.privacy.outputs import decrypt_output
    from medwb.report.build import build_report

    study = encrypted_sim[1] / "studies" / "random-scratch-seed0"
    enc = build_report(study, tmp_path / "enc", pdf=False, n_bootstrap=20)
    files = [p for p in (tmp_path / "enc").rglob("*") if p.is_file()]
    assert len(files) > 5 and all(p.read_bytes().startswith(MAGIC) for p in files)
    assert b"<html" not in b"".join(p.read_bytes() for p in files)
    html = decrypt_output(enc[1], tmp_path / "clear.html").read_text()
    assert "1. Dataset and splits" in html
    tables = {p.name for p in (tmp_path / "enc" / "tables").iterdir()}
    assert "metrics.csv" in tables
    assert "WARNING" not in capsys.readouterr().err

    plain = build_report(study, tmp_path / "plain", pdf=False, n_bootstrap=20, plaintext=True)
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "left the protected zone" in err
    assert "1. Dataset and splits" in plain[1].read_text()  # opens in a browser as it is
    with Study.open(study) as st:
        registered = dict(zip(st.artifacts()["path"], st.artifacts()["kind"]))
    for p in (*enc, *plain, tmp_path / "enc" / "tables", tmp_path / "plain" / "tables"):
        assert registered.get(str(Path(p).resolve())) == "report", p
