from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from intentrec.data import DataFormatError
from intentrec.data.readers import movielens
from tests.conftest import write

U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Café Society (1995)|15-Aug-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|1|0|0|0|0\n"
    "3|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)


def make_100k(folder: Path) -> Path:
    write(folder / "u.data", "1\t1\t5\t874965758\n1\t2\t3\t874965759\n2\t1\t4\t876893171\n2\t3\t1\t878542960\n")
    write(folder / "u.item", U_ITEM, encoding="iso-8859-1")
    return folder


def test_ml100k_variant(tmp_path: Path) -> None:
    ds = movielens.read(make_100k(tmp_path / "ml-100k"))
    assert ds.options["variant"] == "ml-100k"
    assert ds.interactions.columns == ["user", "item", "timestamp", "rating"]
    items = {r["item"]: r for r in ds.items.iter_rows(named=True)}
    assert items["2"]["title"] == "Café Society (1995)"
    assert items["2"]["genres"] == ["Drama", "Romance"]
    assert str(items["2"]["release_date"]) == "1995-08-15"
    assert items["3"]["release_date"] is None and items["3"]["genres"] == ["unknown"]


def test_ml100k_bad_release_date(tmp_path: Path) -> None:
    folder = make_100k(tmp_path / "ml")
    write(folder / "u.item", U_ITEM.replace("15-Aug-1995", "1995/08/15"), encoding="iso-8859-1")
    with pytest.raises(DataFormatError, match=r"u\.item:2: column 'release': '1995/08/15'"):
        movielens.read(folder)


def test_ml1m_variant(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(
        folder / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's|Musical\n",
        "iso-8859-1",
    )
    ds = movielens.read(folder)
    assert ds.options == {"variant": "ml-1m", "release_precision": "year"}
    assert ds.interactions["item"].to_list() == ["1193", "661"]
    peach = ds.items.filter(ds.items["item"] == "661").row(0, named=True)
    assert peach["genres"] == ["Animation", "Children's", "Musical"]
    assert str(peach["release_date"]) == "1996-01-01"


def test_ml_csv_variant_with_quoted_titles(tmp_path: Path) -> None:
    folder = tmp_path / "ml-25m"
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n",
    )
    write(
        folder / "movies.csv",
        'movieId,title,genres\n296,Pulp Fiction (1994),Comedy|Crime\n306,"American President, The (1995)",(no genres listed)\n',
    )
    ds = movielens.read(folder)
    assert ds.interactions.height == 2
    president = ds.items.filter(ds.items["item"] == "306").row(0, named=True)
    assert president["title"] == "American President, The (1995)" and president["genres"] == []


def test_not_a_movielens_folder(tmp_path: Path) -> None:
    tmp_path.joinpath("x.txt").write_text("x")
    with pytest.raises(DataFormatError, match="not a MovieLens folder"):
        movielens.read(tmp_path)


@pytest.fixture()
def archive_server(tmp_path: Path) -> Iterator[tuple[str, bytes, list[str]]]:
    """A local HTTP server holding ml-100k.zip built from the fixture files; records requests."""
    source = make_100k(tmp_path / "src" / "ml-100k")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in source.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    payload = buffer.getvalue()
    served = tmp_path / "www"
    served.mkdir()
    (served / "ml-100k.zip").write_bytes(payload)
    (served / "ml-100k.zip.md5").write_text(f"MD5 (ml-100k.zip) = {hashlib.md5(payload).hexdigest()}\n")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", payload, requests
    finally:
        server.shutdown()


def test_download_verifies_checksum_caches_and_reads(
    tmp_path: Path, archive_server: tuple[str, bytes, list[str]]
) -> None:
    url, payload, requests = archive_server
    cache = tmp_path / "cache"
    folder = movielens.download("ml-100k", cache, base_url=url, expected_md5=hashlib.md5(payload).hexdigest())
    assert (folder / "u.data").exists()
    assert movielens.read(folder).interactions.height == 4
    count = len(requests)
    assert movielens.download("ml-100k", cache, base_url=url) == folder  # cached: no request
    assert len(requests) == count


def test_download_uses_the_md5_sidecar_when_no_constant(
    tmp_path: Path, archive_server: tuple[str, bytes, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, requests = archive_server
    monkeypatch.setitem(movielens.ARCHIVES, "ml-100k", None)
    folder = movielens.download("ml-100k", tmp_path / "cache", base_url=url)
    assert (folder / "u.item").exists()
    assert any(r.endswith(".md5") for r in requests)


def test_download_rejects_a_wrong_checksum_and_caches_nothing(
    tmp_path: Path, archive_server: tuple[str, bytes, list[str]]
) -> None:
    url, _, _ = archive_server
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch"):
        movielens.download("ml-100k", cache, base_url=url)  # the official MD5 does not match the fixture
    leftovers = [p for p in (cache / "movielens").rglob("*") if p.is_file()]
    assert leftovers == []


def test_download_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown MovieLens archive"):
        movielens.download("ml-7k")
