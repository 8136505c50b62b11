"""medwb: a Jupyter-first workbench for label-efficient, explainable medical-imaging AI.

Data flows one way: ``medwb.data`` (files -> cohort table) -> ``medwb.store`` (study folder) ->
``medwb.models`` (with ``medwb.models.uncertainty``) -> ``medwb.al.acquire`` -> ``medwb.al.loop`` -> ``medwb.explain``
-> ``medwb.report``. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import os

__version__ = "0.1.0"

if os.environ.get("MEDWB_OFFLINE") == "1":  # set by the tests and the demo: refuse non-loopback sockets
    from medwb.offline import install_guard

    install_guard()
