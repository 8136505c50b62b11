"""medwb as a wheel, away from the repository: build it, install it into a fresh virtualenv, and from another folder
run `medwb demo --quick` and then `medwb report` on the study the demo wrote.

The fresh venv reuses the test environment's dependencies through a ``.pth`` line naming that environment's
site-packages. A path added that way has its own ``.pth`` files ignored, so the editable install's import hook
(``__editable__...finder``) never loads: ``medwb`` can only come from the installed wheel, which the test checks.
No network: the wheel is built without build isolation and installed with ``--no-index --no-deps``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from _fixtures import check_demo_outputs

REPO = Path(__file__).resolve().parents[2]
#: What the build needs from the checkout (copied, so the build never writes build/ or *.egg-info into the repo).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "medwb", "notebooks", "data_samples")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` on a copy of the checkout's build inputs; the wheel's path."""
    src = dest / "src"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for name in BUILD_INPUTS:
        p = REPO / name
        (shutil.copytree(p, src / name, ignore=ignore) if p.is_dir() else shutil.copy2(p, src / name))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dest / "dist"), str(src)], cwd=dest, env=env)
    (wheel,) = (dest / "dist").glob("medwb-*.whl")
    return wheel


def fresh_venv(dest: Path) -> tuple[Path, dict[str, str]]:
    """A venv without medwb whose imports fall back to this environment's site-packages (no .pth processed there)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True, timeout=120)
    py = dest / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (purelib / "_medwb_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{dest / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MEDWB_OFFLINE"] = "1"
    # data files of the dependencies (nbconvert's HTML templates) live under this environment's share/jupyter,
    # where a real `pip install` would have put them in the venv
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(Path(sys.prefix) / "share" / "jupyter"),
                                                        env.get("JUPYTER_PATH")]))
    return py, env


def test_wheel_contents_carry_licences(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    notebooks = {n.split("/")[-1] for n in names if n.startswith("medwb/notebooks/")}
    assert notebooks == {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert "medwb/data_samples/classification_2d/pneumoniamnist.npz" in names
    assert "medwb/data_samples/segmentation_3d/hippocampus/dataset.json" in names
    assert "medwb/data_samples/README.md" in names
    # every shipped sample has a licence-and-citation file in its folder or a parent folder below data_samples/
    samples = [n for n in names if n.startswith("medwb/data_samples/") and not n.endswith(".md")]
    for n in samples:
        parts = n.split("/")[2:-1]
        assert any("/".join(["medwb/data_samples", *parts[:i], "LICENSE.md"]) in names
                   for i in range(1, len(parts) + 1)), n
    assert not any(n.startswith("medwb/data_samples/dicom/") for n in names)  # only what medwb needs ships
    # every medwb subpackage of the checkout is in the wheel (setup.py finds them)
    for init in (REPO / "medwb").rglob("__init__.py"):
        assert init.relative_to(REPO).as_posix() in names, init
    assert wheel.stat().st_size < 15e6


@pytest.mark.slow
def test_installed_wheel_runs_demo_and_report_outside_the_repo(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    py, env = fresh_venv(tmp_path / "venv")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
         cwd=tmp_path, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()

    # the wheel's medwb, not the checkout's: no editable hook, package data inside the venv, no source checkout
    probe = _run([str(py), "-c",
                  "import sys, medwb, medwb.resources as r\n"
                  "from jupyter_client.kernelspec import KernelSpecManager\n"
                  "print(medwb.__file__); print(r.notebook_path('04_validation_report'))\n"
                  "print(r.default_demo_data())\n"
                  "print(r.source_checkout()); print(any('editable' in repr(f).lower() for f in sys.meta_path))\n"
                  "print(KernelSpecManager().get_kernel_spec('python3').argv[0])"],
                 cwd=work, env=env).stdout.splitlines()
    venv = (tmp_path / "venv").resolve()
    for line in probe[:3]:
        assert Path(line).resolve().is_relative_to(venv) and not Path(line).resolve().is_relative_to(REPO), line
    assert probe[3:5] == ["None", "False"], probe
    assert probe[5] in ("python", str(py)), probe  # papermill kernels run the venv's python, hence the wheel

    medwb_exe = str(tmp_path / "venv" / "bin" / "medwb")
    _run([medwb_exe, "notebooks", "nb"], cwd=work, env=env)  # to open them in JupyterLab
    shipped = sorted(p.name for p in (work / "nb").glob("*.ipynb"))
    from medwb.resources import APP_NOTEBOOKS

    assert shipped == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb") if p.name not in APP_NOTEBOOKS)
    demo = tmp_path / "demo"
    r = _run([medwb_exe, "demo", "--quick", "--out", str(demo)], cwd=work, env=env, timeout=1200)
    assert f"Index of every report: {demo / 'index.html'}" in r.stdout
    assert str(venv / "lib") in r.stdout  # "medwb demo (quick) on <the wheel's pneumoniamnist.npz>"
    check_demo_outputs(demo, r.stdout)
    studies = sorted((demo / "simulation" / "studies").glob("*/study.sqlite"))
    assert studies, "the demo wrote no study"
    study = next((s.parent for s in studies if s.parent.name.startswith("hybrid")), studies[0].parent)

    rep = tmp_path / "report"
    _run([medwb_exe, "report", str(study), "--out", str(rep), "--no-pdf"], cwd=work, env=env, timeout=900)
    html = sorted(rep.glob("*.html"))
    assert html and "AUC" in html[0].read_text(encoding="utf-8").upper()
    assert not any(REPO in p.resolve().parents for p in (demo, rep))
