"""Test-wide fixtures: the offline guard, and paths to the bundled real data."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ["MEDWB_OFFLINE"] = "1"  # inherited by papermill kernels and CLI subprocesses
# torch threads, unless the user set them: 2 in one process; 1 per worker when pytest-xdist runs several
# (scripts/test.sh: 2 workers on 2 cores), so the workers do not oversubscribe the cores. The controller imports
# this file first and its workers inherit its environment, so the default is marked as ours for a worker to lower
# (xdist sets the worker count before a worker imports this file).
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"], os.environ["MEDWB_TEST_THREADS_DEFAULT"] = "2", "1"
if os.environ.get("MEDWB_TEST_THREADS_DEFAULT") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
# purge audit key and anchors (medwb.privacy.audit): a throw-away folder, never the user's real one
# and the statistics cache (medwb.data.cache): purge tests delete entries of the datasets they purge, which must
# never be the user's own cache; both folders go when the session ends
for _var, _prefix in (("MEDWB_AUDIT_HOME", "medwb-audit-"), ("MEDWB_CACHE", "medwb-cache-")):
    if _var not in os.environ:
        os.environ[_var] = tempfile.mkdtemp(prefix=_prefix)
        atexit.register(shutil.rmtree, os.environ[_var], True)

from medwb.offline import install_guard  # noqa: E402

install_guard()

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """The bundled real data (data_samples/)."""
    return SAMPLES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full shared data set beside the repo, when present (skips otherwise)."""
    p = ROOT.parent / "shared" / "data"
    if not p.is_dir():
        pytest.skip("shared data not present beside the repo")
    return p


@pytest.fixture(scope="session")
def _tiny_pneumonia_trained(samples: Path):
    """The tiny PneumoniaMNIST classifier of the explain tests, trained once per test session (a few seconds)."""
    from _fixtures import train_tiny_pneumonia_model

    return train_tiny_pneumonia_model(samples, n_train=800, n_val=200, epochs=4, seed=0, channels=(8, 16, 32, 64))


@pytest.fixture(scope="module")
def tiny_pneumonia_model(_tiny_pneumonia_trained):
    """A private copy (eval mode, same weights) of the session's tiny PneumoniaMNIST classifier for one test
    module, so a module that changes its model (train mode, hooks) cannot affect another module."""
    import copy

    return copy.deepcopy(_tiny_pneumonia_trained)


@pytest.fixture(params=["plain", "encrypted"])
def study_encryption(request, tmp_path_factory, monkeypatch) -> str:
    """Runs a test on a plain study and on an encrypted one: "encrypted" configures a site key
    (``$MEDWB_KEY_FILE``, inherited by child processes, outside every study), so every study the test creates is
    encrypted (SQLCipher database, AES-GCM files, pseudonymous file names)."""
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    monkeypatch.delenv("MEDWB_KEY_FILE", raising=False)
    if request.param == "encrypted":
        from medwb.privacy.crypto import generate_key

        key_file = tmp_path_factory.mktemp("site-key") / "site.key"
        generate_key(key_file)
        monkeypatch.setenv("MEDWB_KEY_FILE", str(key_file))
    return request.param


@pytest.fixture(scope="session")
def hippocampus(samples: Path):
    """The bundled MSD hippocampus volumes (3D segmentation, 2 classes), opened once per session."""
    from medwb.data import open_dataset

    return open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)


@pytest.fixture(scope="session")
def hc18(samples: Path):
    """The bundled HC18 ultrasound images (2D segmentation, fetal head), opened once per session."""
    from medwb.data import open_dataset

    return open_dataset(samples / "segmentation_2d" / "hc18", progress=False)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test leaves os.environ as it found it: a Dask LocalCluster a test starts itself writes
    MALLOC_TRIM_THRESHOLD_ (and OMP/MKL_NUM_THREADS=1 when unset) there, and every later subprocess of the suite
    (papermill kernels, CLI runs) inherited it and ran about twice as long."""
    from medwb.compute.cluster import environment_kept

    with environment_kept():
        yield
