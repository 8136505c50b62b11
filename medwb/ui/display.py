"""Inline display in a notebook (IPython.display): report tables and figures.

The report's sections return DataFrames and Figures (:mod:`medwb.report`); showing them is a UI concern and
lives here, with every other IPython / ipywidgets use of medwb.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def show_figure(fig: Figure, name: str, folder: str | Path = "figures") -> Path:
    """Save a figure as PNG (for the index page) and display it inline as an embedded image."""
    from IPython.display import Image, display

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = buf.getvalue()
    p = folder / f"{name}.png"
    p.write_bytes(data)
    display(Image(data=data))
    return p


def show_table(df: pd.DataFrame, *, ci: bool = True, max_rows: int = 60) -> None:
    """Display a table without the pandas index (CI columns merged, floats rounded: ``report.sections.fmt``)."""
    from IPython.display import HTML, display

    from medwb.report.sections import fmt

    t = fmt(df, ci=ci)
    more = len(t) - max_rows
    html = t.head(max_rows).to_html(index=False, na_rep="n/a", escape=True)
    display(HTML(html + (f"<p><i>... {more} more rows in the CSV table.</i></p>" if more > 0 else "")))


def show_markdown(text: str) -> None:
    """Display Markdown text inline."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def show_image(path: str | Path, *, width: int = 640) -> None:
    """Display a PNG file inline (explanation overlays in the report's gallery), decrypted in memory when it is
    encrypted (maps of an encrypted study)."""
    from IPython.display import Image, display

    from medwb.store.files import read_bytes

    display(Image(data=read_bytes(path), format="png", width=width))


def show_explanations(checks: pd.DataFrame, overlays: Sequence[Path], *, summary: pd.DataFrame | None = None,
                      failed: list[str] | None = None, max_overlays: int = 8) -> None:
    """The report's explanation section: the checks' summary table, the failed checks, a gallery of at most
    ``max_overlays`` overlays, or a line saying that no explanation outputs were given."""
    if summary is not None:
        show_table(summary)
    if failed is not None:
        show_markdown("**Checks failed** (the method's maps should not be trusted for that property): " +
                      (", ".join(failed) if failed else "none") + ".")
    if overlays:
        show_markdown(f"Gallery: {min(len(overlays), max_overlays)} of {len(overlays)} overlays.")
        for p in overlays[:max_overlays]:
            show_markdown(f"`{p.name}`")
            show_image(p, width=640)
    if not len(checks) and not overlays:
        show_markdown("No explanation outputs were given (run `medwb explain` and pass its folder as "
                      "`explain_dir`).")
