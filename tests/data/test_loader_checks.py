"""Issue 17's loader refusals: each bad file kind is a DataError naming the file, the column and the line,
and through the CLI an exit status 2 with one `error:` line; archive members decode like plain files."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlchapter.data import DataError, load, load_csv, tabular

REPO = Path(__file__).resolve().parents[2]
PIMA = ",".join(tabular.PIMA_COLUMNS)


def _pima_rows(n: int = 12, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [",".join([*(str(v) for v in rng.integers(1, 100, 8)), str(i % 2)]) for i in range(n)]


def _pima(header: str = PIMA, rows: list[str] | None = None) -> str:
    return "\n".join([header, *(_pima_rows() if rows is None else rows)]) + "\n"


def _with_cell(value: str, row: int = 3, column: int = 1) -> str:
    rows = _pima_rows()
    fields = rows[row].split(",")
    fields[column] = value
    rows[row] = ",".join(fields)
    return _pima(rows=rows)


# (file text, words the message must hold: file name is checked separately)
BAD_FILES = {
    "repeated feature column": (
        _pima(header=PIMA.replace("BloodPressure", "Glucose")),
        ["'Glucose'", "line 1", "more than once"],
    ),
    "repeated target column": (_pima(header=PIMA.replace("Age", "Outcome")), ["'Outcome'", "line 1", "more than once"]),
    "1e39 beyond float32": (_with_cell("1e39"), ["'Glucose'", "line 5", "float32"]),
    "1e308 beyond float32": (_with_cell("1e308", row=7, column=5), ["'BMI'", "line 9", "float32"]),
    "empty file": ("", ["line 1", "empty"]),
    "blank lines only": ("\n \n\n", ["line 1", "empty"]),
    "header only": (PIMA + "\n", ["line 1", "no data rows", "'Outcome'"]),
    "semicolon separated": (_pima().replace(",", ";"), ["line 1", "sep=';'", "single column"]),
    "tab separated": (_pima().replace(",", "\t"), ["line 1", "sep='\\t'", "a tab"]),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_bad_file_is_refused_naming_file_column_and_line(tmp_path: Path, kind: str) -> None:
    text, words = BAD_FILES[kind]
    path = tmp_path / "diabetes.csv"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        load("diabetes", path=path)
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_good_file_of_the_same_shape_loads(tmp_path: Path) -> None:
    """The refusals above come from the defect planted in each file, not from the file's shape."""
    path = tmp_path / "diabetes.csv"
    path.write_text(_with_cell("3.4e38"))  # just inside float32's range
    ds = load("diabetes", path=path)
    assert ds.x.shape == (12, 8) and np.isfinite(ds.x).all() and ds.x[3, 1] == np.float32(3.4e38)


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_cli_exits_2_with_one_error_line(tmp_path: Path, kind: str) -> None:
    """Every refusal, through `dlchapter run diabetes --data-dir`: exit 2, one `error:` line, no report."""
    text, words = BAD_FILES[kind]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "diabetes.csv").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DLCHAPTER_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("DLCHAPTER_DATA_DIR", None)
    argv = ["run", "diabetes", "--workdir", str(tmp_path / "run"), "--data-dir", str(data_dir), "--epochs", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "dlchapter.cli", *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in [str(data_dir / "diabetes.csv"), *words]:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "run" / "metrics.json").exists()


# --- archives decode exactly like plain files ---------------------------------------------------------


def _variants(text: str) -> dict[str, bytes]:
    """The same table as plain UTF-8, with a byte-order mark, and with CRLF line ends."""
    return {"plain": text.encode(), "bom": b"\xef\xbb\xbf" + text.encode(), "crlf": text.replace("\n", "\r\n").encode()}


@pytest.mark.parametrize("variant", ["plain", "bom", "crlf"])
@pytest.mark.parametrize("container", ["file", "gz", "zip", "tgz"])
def test_archive_members_decode_like_plain_files(tmp_path: Path, variant: str, container: str) -> None:
    text = _pima()
    raw = _variants(text)[variant]
    reference = load_csv(_put(tmp_path / "ref", "file", text.encode()), target="Outcome", task="binary")
    path = _put(tmp_path / variant, container, raw)
    ds = load_csv(path, target="Outcome", task="binary")
    np.testing.assert_array_equal(ds.x, reference.x)
    np.testing.assert_array_equal(ds.y, reference.y)
    assert ds.feature_names == reference.feature_names == tabular.PIMA_COLUMNS[:-1]  # no "\ufeffPregnancies"


def _put(directory: Path, container: str, raw: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if container == "file":
        path = directory / "pima.csv"
        path.write_bytes(raw)
    elif container == "gz":
        path = directory / "pima.csv.gz"
        path.write_bytes(gzip.compress(raw))
    elif container == "zip":
        path = directory / "pima.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("folder/pima.csv", raw)
    else:
        path = directory / "pima.tgz"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("pima.csv")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_tar_member_of_the_california_loader_with_bom_and_crlf(tmp_path: Path) -> None:
    rows = "\n".join(f"-122.{i},37.8,41,880,129,322,126,8.3,452600" for i in range(5)) + "\n"
    plain = tmp_path / "cal_housing.data"
    plain.write_text(rows)
    raw = b"\xef\xbb\xbf" + rows.replace("\n", "\r\n").encode()
    archive = tmp_path / "cal_housing.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("CaliforniaHousing/cal_housing.data")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    a, b = load("california_housing", path=plain), load("california_housing", path=archive)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
