"""MovieLens (GroupLens): ML-100K, ML-1M (and ML-10M), ML-20M/25M/32M/latest.

The variant is detected from the folder's files:

* ``u.data`` + ``u.item`` (ML-100K): tab-separated ratings; ``|``-separated ISO-8859-1 catalogue with a
  release date (``01-Jan-1995``) and 19 genre flags in ``u.genre`` order.
* ``ratings.dat`` + ``movies.dat`` (ML-1M, ML-10M): ``::``-separated; the catalogue has the year in the
  title and ``|``-separated genres. The release date is only known to the year, so the recency intent
  is disabled for these (see `intentrec.data.intents`).
* ``ratings.csv`` + ``movies.csv`` (ML-20M and later): CSV with a header; titles may be quoted.

`download` fetches an official archive into a local cache and checks it against the published MD5
(the constants below, or GroupLens' ``.md5`` sidecar for variants without one here) before unpacking.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import polars as pl

from intentrec.data.schema import Dataset, make_dataset
from intentrec.data.textio import (
    BadRows,
    DataFormatError,
    Field,
    OnBadRows,
    drop_duplicate_events,
    read_delimited,
)

__all__ = ["ARCHIVES", "ML100K_GENRES", "default_cache_dir", "detect_variant", "download", "read"]

log = logging.getLogger(__name__)

BASE_URL = "https://files.grouplens.org/datasets/movielens"
# Published MD5 of each official archive (GroupLens' `<name>.zip.md5`); None: read the sidecar.
ARCHIVES: dict[str, str | None] = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
    "ml-32m": None,
    "ml-latest-small": None,
    "ml-latest": None,
}
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
RATING_FIELDS = (
    Field("user", "int"),
    Field("item", "int"),
    Field("rating", "float"),
    Field("timestamp", "timestamp"),
)

Opener = Callable[[str], BinaryIO]


def detect_variant(folder: Path) -> str:
    """Return "100k", "1m" or "csv" from the files present, or raise naming what is missing."""
    if (folder / "u.data").exists():
        return "100k"
    if (folder / "ratings.dat").exists():
        return "1m"
    if (folder / "ratings.csv").exists():
        return "csv"
    raise DataFormatError(
        folder,
        "not a MovieLens folder: expected u.data (ML-100K), ratings.dat (ML-1M/10M) or ratings.csv (ML-20M+)",
    )


def read(path: Path, *, on_bad_rows: OnBadRows = "error") -> Dataset:
    """Read a MovieLens folder (or an official zip archive) of any supported variant."""
    path = Path(path)
    if path.suffix == ".zip":
        path = _unpack(path, path.with_suffix(""))
    if path.is_dir() and not any(path.glob("*ratings*")) and not (path / "u.data").exists():
        inner = [p for p in path.iterdir() if p.is_dir() and p.name.startswith("ml-")]
        if len(inner) == 1:
            path = inner[0]
    variant = detect_variant(path)
    bad = BadRows()
    if variant == "100k":
        ratings_file = path / "u.data"
        ratings = read_delimited(ratings_file, RATING_FIELDS, separator="\t", on_bad_rows=on_bad_rows, bad=bad)
        items = _read_100k_items(path / "u.item", on_bad_rows, bad)
        options = {"variant": "ml-100k", "release_precision": "day"}
    elif variant == "1m":
        ratings_file = path / "ratings.dat"
        ratings = read_delimited(ratings_file, RATING_FIELDS, separator="::", on_bad_rows=on_bad_rows, bad=bad)
        items = _read_movies_dat(path / "movies.dat", on_bad_rows, bad)
        options = {"variant": "ml-1m", "release_precision": "year"}
    else:
        ratings_file = path / "ratings.csv"
        fields = [
            Field("user", "int", source="userId"),
            Field("item", "int", source="movieId"),
            Field("rating", "float"),
            Field("timestamp", "timestamp"),
        ]
        ratings = read_delimited(ratings_file, fields, separator=",", has_header=True, on_bad_rows=on_bad_rows, bad=bad)
        items = _read_movies_csv(path / "movies.csv", on_bad_rows, bad)
        options = {"variant": "ml-csv", "release_precision": "year"}
    ratings = drop_duplicate_events(
        ratings_file, ratings, ["user", "item", "timestamp"], on_bad_rows=on_bad_rows, bad=bad
    )
    interactions = ratings.with_columns(pl.col("user").cast(pl.String), pl.col("item").cast(pl.String))
    return make_dataset(
        "movielens-" + str(options["variant"]).removeprefix("ml-"),
        interactions,
        items,
        bad_rows=bad,
        sources=tuple(sorted(p for p in path.iterdir() if p.is_file())),
        options=options,
    )


def _read_100k_items(path: Path, on_bad_rows: OnBadRows, bad: BadRows) -> pl.DataFrame:
    fields = [
        Field("item", "int"),
        Field("title"),
        Field("release", required=False),
        Field("video_release", required=False),
        Field("url", required=False),
        *[Field(f"g{i}", "int") for i in range(len(ML100K_GENRES))],
    ]
    frame = read_delimited(path, fields, separator="|", encoding="iso-8859-1", on_bad_rows=on_bad_rows, bad=bad)
    flags = [f"g{i}" for i in range(len(ML100K_GENRES))]
    not_flag = frame.filter(pl.any_horizontal([~pl.col(c).is_in([0, 1]) for c in flags]))
    if not_flag.height:
        raise DataFormatError(path, "genre flags must be 0 or 1", line=int(not_flag["line"][0]))
    release = pl.col("release").str.strip_chars()
    parsed = release.str.to_date("%d-%b-%Y", strict=False)
    unparsable = frame.filter(release.str.len_bytes().fill_null(0).gt(0) & parsed.is_null())
    if unparsable.height:
        row = unparsable.row(0, named=True)
        raise DataFormatError(
            path,
            f"column 'release': {row['release']!r} is not a date like 01-Jan-1995",
            line=int(row["line"]),
        )
    genres = pl.concat_list(
        [pl.when(pl.col(f) == 1).then(pl.lit(name)) for f, name in zip(flags, ML100K_GENRES, strict=True)]
    )
    return frame.select(
        pl.col("item").cast(pl.String),
        pl.col("title").str.strip_chars(),
        genres.list.drop_nulls().alias("genres"),
        pl.lit("film").alias("format"),
        parsed.alias("release_date"),
    )


def _year_date(title: pl.Expr) -> pl.Expr:
    year = title.str.extract(r"\((\d{4})\)\s*$", 1)
    return pl.date(year.cast(pl.Int32, strict=False), 1, 1)


def _catalogue(frame: pl.DataFrame) -> pl.DataFrame:
    """`item, title, genres` (``|``-separated) to catalogue rows; the release year comes from the title."""
    genres = pl.col("genres").str.split("|").list.eval(pl.element().filter(pl.element() != "(no genres listed)"))
    return frame.select(
        pl.col("item").cast(pl.String),
        pl.col("title").str.strip_chars(),
        genres.alias("genres"),
        pl.lit("film").alias("format"),
        _year_date(pl.col("title").str.strip_chars()).alias("release_date"),
    )


def _read_movies_dat(path: Path, on_bad_rows: OnBadRows, bad: BadRows) -> pl.DataFrame:
    fields = [Field("item", "int"), Field("title"), Field("genres", required=False)]
    frame = read_delimited(path, fields, separator="::", encoding="iso-8859-1", on_bad_rows=on_bad_rows, bad=bad)
    return _catalogue(frame)


def _read_movies_csv(path: Path, on_bad_rows: OnBadRows, bad: BadRows) -> pl.DataFrame:
    """movies.csv has quoted titles ("American President, The (1995)"): read it with the csv module."""
    if not path.exists():
        raise DataFormatError(path, "no such file")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DataFormatError(path, "the file is empty")
    expected = ["movieId", "title", "genres"]
    if header[:3] != expected:
        raise DataFormatError(path, f"expected the header {expected}, found {header}", line=1)
    rows: list[tuple[str, str, str]] = []
    problems: list[tuple[int, str]] = []
    for values in reader:
        line = reader.line_num
        if not values:
            continue
        if len(values) != 3:
            problems.append((line, f"expected 3 fields (movieId, title, genres), found {len(values)}"))
        elif not values[0].strip().isdigit():
            problems.append((line, f"column 'item': {values[0]!r} is not an integer"))
        else:
            rows.append((values[0].strip(), values[1], values[2]))
            continue
        if on_bad_rows == "error":
            raise DataFormatError(path, problems[-1][1], line=problems[-1][0])
    bad.add(path, pl.DataFrame(problems, schema=["line", "reason"], orient="row"))
    frame = pl.DataFrame(rows, schema=["item", "title", "genres"], orient="row")
    return _catalogue(frame)


def default_cache_dir() -> Path:
    """``$INTENTREC_CACHE`` or ``~/.cache/intentrec``."""
    return Path(os.environ.get("INTENTREC_CACHE", Path.home() / ".cache" / "intentrec"))


def _urlopen(url: str) -> BinaryIO:
    response: BinaryIO = urllib.request.urlopen(url, timeout=60)
    return response


def download(
    name: str,
    cache_dir: Path | None = None,
    *,
    base_url: str = BASE_URL,
    opener: Opener = _urlopen,
    expected_md5: str | None = None,
) -> Path:
    """Fetch an official MovieLens archive (``ml-100k``, ``ml-1m``, ...) into the cache and unpack it.

    Returns the unpacked folder. A cached, already verified copy is reused without any network
    access. The archive is written to a temporary file and only renamed into the cache once its MD5
    matches; a mismatch raises and leaves nothing behind.
    """
    if name not in ARCHIVES:
        raise ValueError(f"unknown MovieLens archive {name!r}; choose one of {sorted(ARCHIVES)}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / "movielens" / name
    marker = target / ".verified"
    if marker.exists():
        return _inner(target, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    url = f"{base_url}/{name}.zip"
    md5 = expected_md5 or ARCHIVES[name]
    if md5 is None:
        with opener(url + ".md5") as sidecar:
            md5 = _parse_md5(sidecar.read().decode("ascii", errors="replace"), url + ".md5")
    log.info("downloading %s", url)
    digest = hashlib.md5(usedforsecurity=False)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".zip.part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with opener(url) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    if digest.hexdigest() != md5:
        tmp_path.unlink(missing_ok=True)
        raise ValueError(f"{url}: checksum mismatch: MD5 {digest.hexdigest()}, expected {md5}; nothing was cached")
    archive = target.parent / f"{name}.zip"
    tmp_path.replace(archive)
    _unpack(archive, target)
    marker.write_text(md5 + "\n")
    return _inner(target, name)


def _parse_md5(text: str, where: str) -> str:
    """Accept both ``MD5 (x.zip) = <hex>`` and ``<hex>  x.zip``."""
    for token in text.replace("=", " ").split():
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token.lower()):
            return token.lower()
    raise ValueError(f"{where}: no MD5 checksum found in {text[:80]!r}")


def _unpack(archive: Path, target: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            resolved = (target / member).resolve()
            if not str(resolved).startswith(str(target.resolve())):
                raise DataFormatError(archive, f"archive member {member!r} escapes the target folder")
        zf.extractall(target)
    return target


def _inner(target: Path, name: str) -> Path:
    return target / name if (target / name).is_dir() else target
