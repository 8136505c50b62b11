"""Plain values for the database: timestamps and JSON that SQLite columns can hold."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd


def now() -> str:
    """The current UTC time as stored in every ``*_at`` column (ISO 8601, microseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def jsonable(v: Any) -> Any:
    """Plain Python value for JSON: numpy scalars -> int/float, NA/NaN -> None."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (pd.Timestamp, datetime)):
        return v.isoformat()
    return v


def jsonable_column(col: pd.Series) -> list[Any]:
    """``[jsonable(v) for v in col]``, without a Python call per value for plain columns (a cohort of a million
    cases is registered column by column)."""
    kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else "O"  # nullable / arrow: NA -> None below
    if kind in "iub":
        return col.tolist()
    if kind == "f":
        return [None if v != v else v for v in col.tolist()]
    vals = col.to_numpy(dtype=object, na_value=None) if kind != "M" else col.astype(object).to_numpy()
    return [v if v is None or type(v) is str else jsonable(v) for v in vals]


def dumps(v: Any) -> str:
    """JSON text of ``v`` (sorted keys), as stored in the JSON columns."""
    return json.dumps(jsonable(v), sort_keys=True)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (metric names for learning curves)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
