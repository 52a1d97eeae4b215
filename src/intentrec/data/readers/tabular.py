"""Any interaction log as CSV/TSV or Parquet, with a column mapping.

The mapping names, for each canonical column (`intentrec.data.schema`), the source column that holds
it: ``{"user": "userId", "item": "movieId", "timestamp": "ts"}``. Unmapped canonical columns default
to a source column of the same name when one exists. An optional catalogue file (``items``) is read
the same way, with ``genres`` split on ``genre_separator``.

Timestamps are integer or decimal seconds, or, with ``timestamp_format`` (strftime, e.g.
``%Y-%m-%d %H:%M:%S``), date-time text; Parquet date-time columns are converted directly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from intentrec.data.schema import INTERACTION_SCHEMA, ITEM_SCHEMA, Dataset, make_dataset
from intentrec.data.textio import (
    BadRows,
    DataFormatError,
    Field,
    OnBadRows,
    drop_duplicate_events,
    parse_fields,
    read_lines,
)

__all__ = ["read_csv", "read_parquet"]

_TYPES = {"user": "str", "item": "str", "timestamp": "timestamp", "weight": "float", "rating": "float"}


def _fields(
    mapping: Mapping[str, str], header: list[str], schema: Mapping[str, object], required: tuple[str, ...]
) -> list[Field]:
    unknown = [k for k in mapping if k not in schema]
    if unknown:
        raise ValueError(f"unknown canonical column(s) {unknown} in the column mapping; allowed: {list(schema)}")
    fields = []
    for name in schema:
        source = mapping.get(name, name)
        if name in required or source in header:
            kind = _TYPES.get(name, "str")
            fields.append(Field(name, kind, required=name in required, source=source))  # type: ignore[arg-type]
    return fields


def _records(path: Path, separator: str, on_bad_rows: OnBadRows, bad: BadRows) -> tuple[pl.DataFrame, list[str], bool]:
    """The file's header and its records as a ``line, __values`` frame, honouring CSV quoting."""
    lines, unterminated = read_lines(path, on_bad_rows=on_bad_rows, bad=bad)
    if lines.height < 2:
        raise DataFormatError(path, "expected a header line and at least one record")
    text = "\n".join(lines["text"].to_list())
    if '"' not in text:
        header = [h.strip() for h in lines["text"][0].split(separator)]
        body = lines.slice(1).with_columns(pl.col("text").str.split(separator).alias("__values"))
        return body.select("line", "__values"), header, unterminated
    numbers = lines["line"].to_list()
    rows = list(csv.reader(io.StringIO(text), delimiter=separator))
    if len(rows) != len(numbers):  # a quoted field spans lines: fall back to the csv module's own numbering
        raise DataFormatError(path, "quoted fields spanning several lines are not supported")
    header = [h.strip() for h in rows[0]]
    body = pl.DataFrame(
        {"line": numbers[1:], "__values": rows[1:]},
        schema={"line": pl.UInt32, "__values": pl.List(pl.String)},
    )
    return body, header, unterminated


def _parse_times(
    path: Path, frame: pl.DataFrame, timestamp_format: str | None, on_bad_rows: OnBadRows, bad: BadRows
) -> pl.DataFrame:
    if timestamp_format is None or "timestamp" not in frame.columns:
        return frame
    parsed = pl.col("timestamp").str.strptime(pl.Datetime("ms"), timestamp_format, strict=False)
    frame = frame.with_columns(parsed.dt.epoch("s").alias("__ts"))
    wrong = frame.filter(pl.col("__ts").is_null()).select(
        "line",
        pl.format(f"column 'timestamp': '{{}}' does not match {timestamp_format!r}", pl.col("timestamp")).alias(
            "reason"
        ),
    )
    if wrong.height:
        if on_bad_rows == "error":
            line, reason = wrong.row(0)
            raise DataFormatError(path, reason, line=int(line))
        bad.add(path, wrong)
    return frame.filter(pl.col("__ts").is_not_null()).with_columns(pl.col("__ts").alias("timestamp")).drop("__ts")


def _finish(
    path: Path,
    frame: pl.DataFrame,
    items: pl.DataFrame | None,
    bad: BadRows,
    on_bad_rows: OnBadRows,
    sources: tuple[Path, ...],
) -> Dataset:
    if "timestamp" in frame.columns:
        keys = [c for c in ("user", "item", "timestamp", "event") if c in frame.columns]
        frame = drop_duplicate_events(path, frame, keys, on_bad_rows=on_bad_rows, bad=bad)
    return make_dataset(
        path.stem, frame, items, bad_rows=bad, sources=sources, options={"format": path.suffix.lstrip(".")}
    )


def read_csv(
    path: Path,
    *,
    columns: Mapping[str, str] | None = None,
    separator: str = ",",
    timestamp_format: str | None = None,
    items: Path | None = None,
    item_columns: Mapping[str, str] | None = None,
    genre_separator: str = "|",
    on_bad_rows: OnBadRows = "error",
) -> Dataset:
    """Read a delimited log with a header line; ``columns`` maps canonical names to header names."""
    path = Path(path)
    bad = BadRows()
    body, header, unterminated = _records(path, separator, on_bad_rows, bad)
    fields = _fields(columns or {}, header, INTERACTION_SCHEMA, ("user", "item"))
    if timestamp_format is not None:
        fields = [Field(f.name, "str", f.required, f.source) if f.name == "timestamp" else f for f in fields]
    frame = parse_fields(
        path,
        body,
        fields,
        separator=separator,
        unterminated=unterminated,
        on_bad_rows=on_bad_rows,
        bad=bad,
        header=header,
    )
    frame = _parse_times(path, frame, timestamp_format, on_bad_rows, bad)
    catalogue = None
    if items is not None:
        item_body, item_header, item_unterminated = _records(Path(items), separator, on_bad_rows, bad)
        item_fields = _fields(item_columns or {}, item_header, ITEM_SCHEMA, ("item",))
        item_fields = [
            Field(f.name, "float" if f.name == "duration" else "str", f.required, f.source) for f in item_fields
        ]
        raw = parse_fields(
            Path(items), item_body, item_fields, separator=separator, unterminated=item_unterminated,
            on_bad_rows=on_bad_rows, bad=bad, header=item_header,
        )  # fmt: skip
        catalogue = _catalogue_columns(Path(items), raw, genre_separator)
    return _finish(path, frame, catalogue, bad, on_bad_rows, (path,) + ((Path(items),) if items else ()))


def _catalogue_columns(path: Path, raw: pl.DataFrame, genre_separator: str) -> pl.DataFrame:
    out = raw
    if "genres" in out.columns:
        out = out.with_columns(pl.col("genres").str.split(genre_separator).list.eval(pl.element().str.strip_chars()))
    if "release_date" in out.columns and out.schema["release_date"] == pl.String:
        parsed = pl.col("release_date").str.to_date("%Y-%m-%d", strict=False)
        wrong = out.filter(pl.col("release_date").is_not_null() & parsed.is_null())
        if wrong.height:
            row = wrong.row(0, named=True)
            raise DataFormatError(
                path,
                f"column 'release_date': {row['release_date']!r} is not a YYYY-MM-DD date",
                line=int(row["line"]),
            )
        out = out.with_columns(parsed)
    return out


def read_parquet(
    path: Path,
    *,
    columns: Mapping[str, str] | None = None,
    items: Path | None = None,
    item_columns: Mapping[str, str] | None = None,
    on_bad_rows: OnBadRows = "error",
) -> Dataset:
    """Read a Parquet log; rows are numbered from 1 in error messages (``file.parquet:ROW``)."""
    path = Path(path)
    bad = BadRows()
    table = _read_parquet_file(path)
    fields = _fields(columns or {}, table.columns, INTERACTION_SCHEMA, ("user", "item"))
    frame = parse_fields(
        path, _as_values(table, fields), fields, separator=",", unterminated=False, on_bad_rows=on_bad_rows, bad=bad,
        header=[f.source_name for f in fields],
    )  # fmt: skip
    catalogue = None
    if items is not None:
        item_table = _read_parquet_file(Path(items))
        mapping = item_columns or {}
        catalogue = item_table.select(
            [pl.col(mapping.get(c, c)).alias(c) for c in ITEM_SCHEMA if mapping.get(c, c) in item_table.columns]
        )
        if "item" not in catalogue.columns:
            raise DataFormatError(items, f"missing column {mapping.get('item', 'item')!r}")
        catalogue = catalogue.with_columns(pl.col("item").cast(pl.String))
    return _finish(path, frame, catalogue, bad, on_bad_rows, (path,) + ((Path(items),) if items else ()))


def _read_parquet_file(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise DataFormatError(path, "no such file")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for a damaged file
        raise DataFormatError(path, f"not a readable Parquet file: {exc}") from None


def _as_values(table: pl.DataFrame, fields: list[Field]) -> pl.DataFrame:
    """Parquet columns as the text values the shared validation expects."""
    texts = []
    for f in fields:
        column = pl.col(f.source_name)
        dtype = table.schema[f.source_name]
        if f.name == "timestamp" and dtype.is_temporal():
            column = column.dt.epoch("s")
        texts.append(column.cast(pl.String))
    return table.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias("line"), pl.concat_list(texts).alias("__values")
    )
