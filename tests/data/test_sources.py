"""Lookup order, cache location, offline errors and the checksummed atomic download (local HTTP server)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from dlchapter.data import DataError, known_datasets, load, sources

from .conftest import LocalServer, Route


def _series_csv(n: int, value: float) -> str:
    return '"Month","Passengers"\n' + "".join(f'"19{50 + i // 12:02d}-{i % 12 + 1:02d}",{value}\n' for i in range(n))


def _files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_cache_dir_follows_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.cache_dir() == tmp_path / "xdg" / "dlchapter"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sources.cache_dir() == tmp_path / "home" / ".cache" / "dlchapter"


def test_lookup_order_path_then_data_dir_then_env_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    places = {"explicit": 5, "data_dir": 6, "env": 7, "cache": 8}
    dirs = {k: tmp_path / k for k in places}
    for key, n in places.items():
        target = isolated_env if key == "cache" else dirs[key]
        target.mkdir(parents=True)
        (target / "airline-passengers.csv").write_text(_series_csv(n, float(n)))
    monkeypatch.setenv("DLCHAPTER_DATA_DIR", str(dirs["env"]))
    explicit = dirs["explicit"] / "airline-passengers.csv"
    assert len(load("airline_passengers", dirs["data_dir"], path=explicit)) == 5
    assert len(load("airline_passengers", dirs["data_dir"])) == 6
    assert len(load("airline_passengers")) == 7
    monkeypatch.delenv("DLCHAPTER_DATA_DIR")
    ds = load("airline_passengers")
    assert len(ds) == 8 and ds.source == str(isolated_env / "airline-passengers.csv")
    # a data_dir without the file falls through to the next place in the order
    assert len(load("airline_passengers", tmp_path / "empty")) == 8


def test_explicit_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        load("diamonds", path=tmp_path / "nope.csv")


def test_offline_with_nothing_found_names_the_file_and_where_to_put_it(tmp_path: Path, isolated_env: Path) -> None:
    with pytest.raises(DataError) as info:
        load("monthly_sunspots", tmp_path)
    message = str(info.value)
    assert "monthly-sunspots.csv" in message
    assert str(tmp_path / "monthly-sunspots.csv") in message
    assert str(isolated_env / "monthly-sunspots.csv") in message
    assert "DLCHAPTER_DATA_DIR" in message and "offline" in message.lower()
    assert "jbrownlee/Datasets" in message  # where to fetch it by hand


def test_every_name_but_fashion_mnist_loads_from_the_shared_directory(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance check: DLCHAPTER_DATA_DIR=../shared/data gives the issue's row counts."""
    monkeypatch.setenv("DLCHAPTER_DATA_DIR", str(shared_data))
    rows = {
        "diamonds": 53_940,
        "california_housing": 20_640,
        "diabetes": 768,
        "iris": 150,
        "daily_min_temperatures": 3_650,
        "airline_passengers": 144,
        "monthly_sunspots": 2_820,
    }
    for name, n in rows.items():
        ds = load(name)
        assert len(ds) == ds.y.shape[0] == n, name
        assert ds.source.startswith(str(shared_data)), name
        assert ds.x.dtype == np.float32 and np.isfinite(ds.x).all(), name
    assert len(load("mnist", split="test")) == 10_000
    with pytest.raises(DataError, match="the train split is absent"):
        load("mnist", split="train")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DataError) as info:
        load("diamond")
    message = str(info.value)
    assert "'diamond'" in message and "Did you mean 'diamonds'" in message
    for name in known_datasets():
        assert name in message


def test_known_datasets_is_the_issue_list() -> None:
    assert set(known_datasets()) == {
        "diamonds",
        "california_housing",
        "diabetes",
        "iris",
        "mnist",
        "fashion_mnist",
        "daily_min_temperatures",
        "airline_passengers",
        "monthly_sunspots",
    }


def test_every_downloadable_file_has_a_url_and_sha256() -> None:
    for key, spec in sources.REGISTRY.items():
        if key == "iris":  # scikit-learn ships it
            assert spec.url is None
            continue
        assert spec.url and spec.url.startswith("http"), key
        assert spec.sha256 and len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0, key


# --- downloads against a local server -------------------------------------------------------------


def _spec(body: bytes, name: str = "thing/data.bin") -> sources.FileSpec:
    return sources.FileSpec("thing", (name,), "http://example.invalid/data.bin", hashlib.sha256(body).hexdigest())


def test_download_success_is_verified_and_cached(http_server: LocalServer, isolated_env: Path) -> None:
    body = np.random.default_rng(0).bytes(300_000)
    http_server.routes["/thing/data.bin"] = Route(body)
    spec = _spec(body)
    got = sources.locate(spec, download=True, base_url=http_server.url)
    assert got == isolated_env / "thing" / "data.bin"
    assert got.read_bytes() == body
    assert _files_in(isolated_env) == [got]  # no temporary file left beside it
    again = sources.locate(spec, download=True, base_url=http_server.url)
    assert again == got and http_server.requests == ["/thing/data.bin"]  # second time from the cache


def test_stale_part_files_of_killed_downloads_are_removed(http_server: LocalServer, isolated_env: Path) -> None:
    """A killed download's .part file goes when a later download replaces it; a running one's (newer) stays."""
    body = b"fresh bytes"
    http_server.routes["/thing/data.bin"] = Route(body)
    directory = isolated_env / "thing"
    directory.mkdir(parents=True)
    stale, running, other = (
        directory / ".data.bin.k1ll3d.part",
        directory / ".data.bin.wr1t1ng.part",
        directory / ".other.bin.x.part",
    )
    for part in (stale, running, other):
        part.write_bytes(b"half")
    hour_ago = os.path.getmtime(stale) - 3600
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    in_a_minute = os.path.getmtime(running) + 60  # still being written by another process
    os.utime(running, (in_a_minute, in_a_minute))
    got = sources.locate(_spec(body), download=True, base_url=http_server.url)
    assert got.read_bytes() == body
    assert not stale.exists() and running.exists() and other.exists()  # only this file's older temporaries


def test_checksum_mismatch_leaves_nothing_in_the_cache(http_server: LocalServer, isolated_env: Path) -> None:
    body = b"good bytes" * 1000
    http_server.routes["/thing/data.bin"] = Route(body[:-1] + b"X")
    with pytest.raises(DataError, match=r"checksum mismatch for data\.bin") as info:
        sources.locate(_spec(body), download=True, base_url=http_server.url)
    assert hashlib.sha256(body).hexdigest() in str(info.value)
    assert _files_in(isolated_env) == []
    assert not (isolated_env / "thing").exists()


def test_connection_cut_mid_file_leaves_nothing_in_the_cache(http_server: LocalServer, isolated_env: Path) -> None:
    body = np.random.default_rng(1).bytes(200_000)
    http_server.routes["/thing/data.bin"] = Route(body, cut_after=70_000)
    with pytest.raises(DataError, match="cut off: received 70000 of 200000 bytes"):
        sources.locate(_spec(body), download=True, base_url=http_server.url)
    assert _files_in(isolated_env) == []


def test_http_error_and_unreachable_host(http_server: LocalServer, isolated_env: Path) -> None:
    with pytest.raises(DataError, match="404"):
        sources.locate(_spec(b"x"), download=True, base_url=http_server.url)
    with pytest.raises(DataError, match="Downloading failed"):
        sources.locate(_spec(b"x"), download=True, base_url="http://127.0.0.1:9", timeout=5)
    assert _files_in(isolated_env) == []


def test_offline_switch_prevents_any_request(http_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    http_server.routes["/thing/data.bin"] = Route(b"abc")
    with pytest.raises(DataError, match="offline"):
        sources.locate(_spec(b"abc"), base_url=http_server.url)  # DLCHAPTER_OFFLINE=1 from the fixture
    with pytest.raises(DataError, match="offline"):
        sources.locate(_spec(b"abc"), download=False, base_url=http_server.url)
    assert http_server.requests == []
    monkeypatch.setenv("DLCHAPTER_OFFLINE", "0")
    monkeypatch.setenv("DLCHAPTER_DATA_URL", http_server.url)
    assert sources.locate(_spec(b"abc")).read_bytes() == b"abc"


def test_load_downloads_a_real_file_end_to_end(shared_data: Path, http_server: LocalServer, isolated_env: Path) -> None:
    """The registered SHA-256 of airline-passengers.csv accepts the real file served from a mirror."""
    real = (shared_data / "airline-passengers.csv").read_bytes()
    http_server.routes["/airline-passengers.csv"] = Route(real)
    ds = load("airline_passengers", download=True, base_url=http_server.url)
    assert len(ds) == 144 and ds.source == str(isolated_env / "airline-passengers.csv")
    http_server.routes["/monthly-sunspots.csv"] = Route(real)  # wrong file for this name
    with pytest.raises(DataError, match="checksum mismatch"):
        load("monthly_sunspots", download=True, base_url=http_server.url)
    assert _files_in(isolated_env) == [isolated_env / "airline-passengers.csv"]


@pytest.mark.parametrize(
    "name",
    [
        "diamonds.csv",
        "pima-indians-diabetes.csv",
        "daily-min-temperatures.csv",
        "airline-passengers.csv",
        "monthly-sunspots.csv",
    ],
)
def test_registered_checksums_match_the_shared_copies(shared_data: Path, name: str) -> None:
    spec = next(s for s in sources.REGISTRY.values() if s.names[0] == name)
    assert sources.sha256_of(shared_data / name) == spec.sha256


def test_no_shared_data_file_is_in_the_project() -> None:
    """None of ../shared/data's files (by name or by SHA-256) lies in the checkout, .venv and .git aside."""
    root = Path(__file__).resolve().parents[2]
    shared_names = {
        "diamonds.csv",
        "cal_housing.csv",
        "cal_housing.tgz",
        "cal_housing.data",
        "diabetes.csv",
        "iris.csv",
        "pima-indians-diabetes.csv",
        "daily-min-temperatures.csv",
        "airline-passengers.csv",
        "monthly-sunspots.csv",
    }
    hashes = {s.sha256 for s in sources.REGISTRY.values() if s.sha256}
    offenders = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in (".venv", ".git", "__pycache__")]
        for name in files:
            path = Path(directory) / name
            by_name = name in shared_names or "-ubyte" in name
            data_like = path.suffix in (".csv", ".gz", ".tgz", ".data", "")
            if by_name or (data_like and sources.sha256_of(path) in hashes):
                offenders.append(path)
    assert offenders == []
