"""Build the validation report of a study: executed notebook, self-contained HTML and PDF.

``notebooks/04_validation_report.ipynb`` runs through papermill (:func:`medwb.notebook_runner.execute_notebook`)
with the output folder as its working directory, so its ``tables/*.csv`` and ``figures/*.png`` land next to
the report. The PDF is printed from the HTML by Debian's Chromium in headless mode (no browser download, no
LaTeX): the same page a reviewer opens, printed offline.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from medwb.atomic import ensure_output_dir
from medwb.errors import MedwbError, StoreError
from medwb.store.layout import DB_NAME, StudyLayout, is_study

NOTEBOOK = "04_validation_report.ipynb"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Chromium switches that keep the PDF printer off the network: every host name resolves to nothing (so no DNS
#: query leaves, and no connection to Google's update / sync / account services can start), and the background
#: services that phone home are off. tests/report/test_pdf_offline.py audits the process tree's sockets.
OFFLINE_FLAGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-pings",
    "--disable-domain-reliability", "--metrics-recording-only", "--disable-breakpad", "--disable-crash-reporter",
    "--disable-client-side-phishing-detection", "--disable-default-apps", "--disable-extensions",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--no-service-autorun", "--disable-webrtc", "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
)


class ReportError(MedwbError):
    """The report could not be produced (a tool it needs is missing or failed)."""


def find_chromium() -> str:
    """Path of a Chromium/Chrome executable: ``$MEDWB_CHROMIUM``, else the first on PATH."""
    env = os.environ.get("MEDWB_CHROMIUM")
    if env:
        if Path(env).is_file():
            return env
        raise ReportError(f"MEDWB_CHROMIUM={env}: no such file. Fix: point it at a chromium executable or unset it")
    for name in CHROMIUM_CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    raise ReportError("no Chromium found to print the PDF. Fix: install Debian's package "
                      "(sudo apt-get install chromium), set MEDWB_CHROMIUM=/path/to/chromium, "
                      "or build without the PDF (medwb report STUDY --out DIR --no-pdf)")


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """``unshare --net --map-root-user`` when this machine lets an ordinary process make a network namespace with
    no interface but a down loopback (so nothing Chromium tries can leave: even its IPv6 reachability probe, a
    UDP connect to 2001:4860:4860::8888 that no switch turns off, fails there); else () and the
    :data:`OFFLINE_FLAGS` alone keep it off the network."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    prefix = (exe, "--net", "--map-root-user")
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return prefix if ok else ()


def html_to_pdf(html: str | Path, pdf: str | Path, *, timeout_s: int = 180) -> Path:
    """Print a local HTML file to PDF with headless Chromium, offline: in a network namespace of its own where the
    machine allows one, and always with :data:`OFFLINE_FLAGS` (no name resolves, no background service runs)."""
    html, pdf = Path(html).resolve(), Path(pdf).resolve()
    exe = find_chromium()
    with tempfile.TemporaryDirectory(prefix="medwb-chromium-") as profile:
        cmd = [*network_namespace_prefix(), exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *OFFLINE_FLAGS,
               "--no-first-run", "--no-default-browser-check", "--no-pdf-header-footer",
               f"--user-data-dir={profile}", "--run-all-compositor-stages-before-draw",
               "--virtual-time-budget=10000", f"--print-to-pdf={pdf}", html.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ReportError(f"{html}: chromium did not finish printing within {timeout_s} s. "
                              "Fix: retry, or build with --no-pdf") from e
    if proc.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise ReportError(f"{html}: chromium failed to print the PDF (exit {proc.returncode}: {' | '.join(tail)}). "
                          "Fix: check that `chromium --headless --print-to-pdf` works, or build with --no-pdf")
    return pdf


def _discover(study: Path) -> tuple[Path | None, Path | None, Path | None]:
    """Simulation curves, explanation outputs and a class-count sweep that belong to a study, when they sit in
    the usual places.

    ``medwb simulate --out OUT`` writes studies under ``OUT/studies/<name>/`` and ``OUT/curves.csv``; the demo
    writes explanations under ``<study>/exports/explain``; a class sweep (``medwb.pipelines.class_sweep``) writes
    ``SWEEP/classes_<k>/studies/<name>/`` and ``SWEEP/class_sweep.csv``.
    """
    curves = None
    for c in (study / "curves.csv", study.parent.parent / "curves.csv"):
        if c.is_file():
            curves = c
            break
    explain = StudyLayout(study).explain_exports
    sweep = study.parent.parent.parent / "class_sweep.csv"
    return curves, explain if explain.is_dir() else None, sweep if sweep.is_file() else None


def build_report(
    study: str | Path,
    out_dir: str | Path,
    *,
    pdf: bool = True,
    dataset: str | Path | None = None,
    simulation_curves: str | Path | None = None,
    explain_dir: str | Path | None = None,
    class_sweep: str | Path | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    stem: str = "validation_report",
    timeout_s: int = 1800,
    plaintext: bool = False,
) -> list[Path]:
    """Execute the validation notebook for ``study``; return [executed .ipynb, .html, (.pdf)].

    Paths are made absolute because the notebook runs with ``out_dir`` as its working directory. For an encrypted
    study every file (ipynb, HTML, PDF, tables, figures) is written encrypted (built in a RAM folder, then sealed
    with the study's key: ``medwb decrypt FILE --out DEST`` opens one), unless ``plaintext``: then they are written
    in clear, registered for purge, and a warning says they left the protected zone (:mod:`medwb.privacy.outputs`).
    """
    from medwb.store.cipher import study_key

    study = Path(study).resolve()
    if not is_study(study):
        raise StoreError(f"{study}: no study here ({DB_NAME} missing). Fix: pass a study folder made by "
                         "medwb simulate / the active-learning notebook")
    out = ensure_output_dir(Path(out_dir).resolve())
    found_curves, found_explain, found_sweep = _discover(study)
    params = {
        "study": str(study),
        "dataset": None if dataset is None else str(Path(dataset).resolve()),
        "simulation_curves": str(Path(simulation_curves).resolve()) if simulation_curves else
        (str(found_curves) if found_curves else None),
        "explain_dir": str(Path(explain_dir).resolve()) if explain_dir else
        (str(found_explain) if found_explain else None),
        "class_sweep": str(Path(class_sweep).resolve()) if class_sweep else (str(found_sweep) if found_sweep else None),
        "seed": int(seed),
        "n_bootstrap": int(n_bootstrap),
    }
    if params["dataset"] is None:  # resolve relative recorded paths against *our* cwd, not the kernel's
        from medwb.report.sections import resolve_dataset_path
        from medwb.store import Study

        st = Study.open(study)
        try:
            params["dataset"] = str(resolve_dataset_path(st))
        finally:
            st.close()
    key = study_key(StudyLayout(study))  # None: a plain study (a missing key fails here, by name)
    if key is None or plaintext:
        paths = _execute(params, out, stem=stem, pdf=pdf, timeout_s=timeout_s)
        every = [*paths, *(out / d for d in ("tables", "figures") if (out / d).is_dir())]
        register_report(study, every)
        if key is not None:
            from medwb.privacy.outputs import warn_plaintext

            warn_plaintext("report", [f for p in every for f in ([p] if p.is_file() else sorted(p.rglob("*")))
                                      if f.is_file()], study)
        return paths
    from medwb.privacy.outputs import private_workdir, seal

    with private_workdir("medwb-report-") as work:
        built = _execute(params, work, stem=stem, pdf=pdf, timeout_s=timeout_s)
        sealed = seal(work, out, key)
    register_report(study, [*sealed, *(out / d for d in ("tables", "figures") if (out / d).is_dir())])
    return [out / p.relative_to(work) for p in built]


def _execute(params: dict, out: Path, *, stem: str, pdf: bool, timeout_s: int) -> list[Path]:
    """Run the notebook in ``out`` (its working directory); [ipynb, html, (pdf)]."""
    from medwb.notebook_runner import execute_notebook

    ipynb, html = execute_notebook(NOTEBOOK, params, out, stem=stem, hide_code=True, timeout_s=timeout_s)
    paths = [ipynb, html]
    if pdf:
        paths.append(html_to_pdf(html, out / f"{stem}.pdf"))
    return paths


def register_report(study: Path, paths: list[Path]) -> None:
    """Record the report's files in the study (they hold its labels and images), so ``medwb purge`` removes them."""
    from medwb.store import Study

    with Study.open(study) as st:
        st.register_artifacts(paths, "report")
