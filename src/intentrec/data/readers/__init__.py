"""One reader per source format, all returning `intentrec.data.schema.Dataset`.

`read_dataset(path, format)` is the single entry point used by the command line and `prepare`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from intentrec.data.schema import Dataset
from intentrec.data.textio import check_on_bad_rows

__all__ = ["FORMATS", "read_dataset"]

FORMATS = ("movielens", "s3rec", "taobao", "csv", "parquet", "recbole", "synthetic")


def read_dataset(
    path: Path | str, format: str, *, on_bad_rows: str = "error", options: Mapping[str, Any] | None = None
) -> Dataset:
    """Read PATH as FORMAT. ``options`` go to the csv/parquet readers (``columns``, ``separator``, ...)."""
    mode = check_on_bad_rows(on_bad_rows)
    path = Path(path)
    opts = dict(options or {})
    if opts and format not in ("csv", "parquet"):
        raise ValueError(f"format {format!r} takes no reader options, got {sorted(opts)}")
    if format == "movielens":
        from intentrec.data.readers import movielens

        return movielens.read(path, on_bad_rows=mode)
    if format == "s3rec":
        from intentrec.data.readers import s3rec

        return s3rec.read(path, on_bad_rows=mode)
    if format == "taobao":
        from intentrec.data.readers import taobao

        return taobao.read(path, on_bad_rows=mode)
    if format == "csv":
        from intentrec.data.readers import tabular

        return tabular.read_csv(path, on_bad_rows=mode, **opts)
    if format == "parquet":
        from intentrec.data.readers import tabular

        return tabular.read_parquet(path, on_bad_rows=mode, **opts)
    if format == "recbole":
        from intentrec.data.readers import recbole

        return recbole.read(path, on_bad_rows=mode)
    if format == "synthetic":
        from intentrec.data import synthetic

        return synthetic.read(path, on_bad_rows=mode)
    raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
