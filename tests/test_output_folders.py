"""Issue 16 probes on outputs: a read-only output folder used to end in an OSError traceback (after the work, for
some commands); a key file inside the folder it protects was accepted. Both are now refused up front."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from medwb.atomic import ensure_output_dir
from medwb.cli import main
from medwb.errors import CryptoError, OutputError

NPZ = "classification_2d/pneumoniamnist.npz"


@pytest.fixture()
def read_only(tmp_path):
    """A folder no one can write into: mode 0555, and for root (who ignores modes) the immutable attribute."""
    folder = tmp_path / "ro_out"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        immutable = bool(chattr) and subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            folder.chmod(0o755)
            pytest.skip("running as root without chattr +i: no way to make a folder read-only here")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def _refused(argv: list[str], capsys, *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_read_only_output_is_refused_before_any_work(read_only, samples, tmp_path, capsys):
    with pytest.raises(OutputError, match="not writable") as e:
        ensure_output_dir(read_only)
    assert e.value.path == str(read_only)
    _refused(["simulate", str(samples / NPZ), "--out", str(read_only), "--rounds", "1", "--seeds", "1",
              "--quiet"], capsys, str(read_only), "not writable", "Fix:")
    _refused(["simulate", str(samples / NPZ), "--out", str(read_only / "sub"), "--quiet"], capsys,
             "cannot be created")
    _refused(["deid", str(samples / "dicom" / "pydicom" / "CT_small.dcm"), str(read_only), "--key-file",
              str(tmp_path / "k.key")], capsys, "not writable")
    assert not (tmp_path / "k.key").exists()  # refused before the key was created
    _refused(["explore", str(samples / NPZ), "--out", str(read_only)], capsys, "not writable")
    assert list(read_only.iterdir()) == []


def test_output_that_is_a_file_is_refused(samples, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        ensure_output_dir(f)
    _refused(["simulate", str(samples / NPZ), "--out", str(f / "sim"), "--quiet"], capsys, "cannot be created")


def test_key_file_inside_the_output_it_protects_is_refused(samples, tmp_path, capsys):
    from medwb.privacy import crypto
    from medwb.privacy.deid import deidentify_path

    out = tmp_path / "deid_out"
    inside = out / "keys" / "site.key"
    with pytest.raises(CryptoError, match="inside the output folder"):
        deidentify_path(samples / "dicom" / "pydicom" / "CT_small.dcm", out, key_file=inside)
    assert not inside.exists() and not out.exists()  # refused before the key or the folder was made
    _refused(["deid", str(samples / "dicom" / "pydicom" / "CT_small.dcm"), str(out), "--key-file", str(inside)],
             capsys, str(inside), "inside the output folder", "Fix:")
    # an existing key in the output folder, reached through a relative path, is refused as well
    out.mkdir()
    crypto.generate_key(out / "site.key")
    cwd = os.getcwd()
    try:
        os.chdir(out)
        with pytest.raises(CryptoError, match="inside the output folder"):
            deidentify_path(samples / "dicom" / "pydicom" / "CT_small.dcm", out, key_file=Path("site.key"))
    finally:
        os.chdir(cwd)
    # a plain study encrypted (`medwb encrypt`) with a key kept inside the study
    from medwb.store import Study
    from medwb.store.convert import encrypt_study

    study = tmp_path / "study"
    Study.create(study, dataset_path="x", task="classification", classes=["a", "b"], key=False).close()
    (study / "cache" / "x.npy").write_bytes(b"data")
    key = crypto.generate_key(study / "site.key")
    with pytest.raises(CryptoError, match="inside the study folder"):
        encrypt_study(study, key)
    assert (study / "cache" / "x.npy").read_bytes() == b"data" and not (study / "encrypting.json").exists()
    _refused(["encrypt", str(study), "--key-file", str(study / "site.key")], capsys, "inside the study folder")
    # the key outside: fine
    outside = crypto.generate_key(tmp_path / "keys" / "site.key")
    assert encrypt_study(study, outside).encrypted == 1
