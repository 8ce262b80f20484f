"""CSV loaders for the chapter's tables and time series, with validation.

Every problem in a file raises a `DataError` that names the file, the column
and the line, and says what was expected: a missing or renamed column, a
non-numeric value in a numeric column, an empty or NaN cell (unless
``missing="drop"`` or ``missing="impute"`` is asked for), a class label
outside the known ones.
"""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dlchapter.data.preprocessing import label_encode
from dlchapter.data.sources import DataError, Dataset

MISSING_POLICIES = ("error", "drop", "impute")
_NA = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})

DIAMONDS_NUMERIC = ("carat", "depth", "table", "x", "y", "z")
# Physically possible values, for `preprocessing.filter_feature_range`: the
# diamonds file records 20 stones with a zero size and three with y or z over
# 30 mm (the largest real dimension in it is 10.74 mm).
PLAUSIBLE_RANGES = {
    "diamonds": {"x": (0.0, 20.0), "y": (0.0, 20.0), "z": (0.0, 20.0)},
}
DIAMONDS_CATEGORIES = {  # sorted as pd.get_dummies sorts them
    "cut": ("Fair", "Good", "Ideal", "Premium", "Very Good"),
    "color": ("D", "E", "F", "G", "H", "I", "J"),
    "clarity": ("I1", "IF", "SI1", "SI2", "VS1", "VS2", "VVS1", "VVS2"),
}
STATLIB_COLUMNS = (
    "longitude", "latitude", "housingMedianAge", "totalRooms", "totalBedrooms",
    "population", "households", "medianIncome", "medianHouseValue",
)
CALIFORNIA_FEATURES = (
    "MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude",
)
PIMA_COLUMNS = (
    "Pregnancies", "Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI",
    "DiabetesPedigreeFunction", "Age", "Outcome",
)
IRIS_COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width", "species")
IRIS_FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")
SERIES_COLUMNS = {  # data set -> (date column, value column)
    "daily_min_temperatures": ("Date", "Temp"),
    "airline_passengers": ("Month", "Passengers"),
    "monthly_sunspots": ("Month", "Sunspots"),
}


def _decode(raw: bytes, where: str) -> str:
    """Bytes of a CSV as text: UTF-8 with an optional byte-order mark, line ends made "\\n" (CRLF, CR)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not a UTF-8 text file ({err})") from err
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _archive_member(path: Path, member: str | None) -> tuple[bytes, str]:
    """The bytes of a tar/zip member (named by the end of its name, or the only file) or of a .gz file."""
    name = path.name.lower()
    if name.endswith(".gz") and not name.endswith((".tar.gz", ".tgz")):
        with gzip.open(path, "rb") as stream:
            return stream.read(), str(path)
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            files = [m for m in archive.infolist() if not m.is_dir()]
            found = [m for m in files if member is None or m.filename.endswith(member)]
            if len(found) != 1:
                listed = ", ".join(m.filename for m in files[:10])
                wanted = f"a member named {member!r}" if member else "exactly one file"
                raise DataError(f"{path}: the archive must hold {wanted}; it holds {len(found)} matching: {listed}")
            return archive.read(found[0]), f"{path}!{found[0].filename}"
    with tarfile.open(path, "r:*") as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
        found = [m for m in files if member is None or m.name.endswith(member)]
        if len(found) != 1:
            raise DataError(f"{path}: archive has no single member named {member!r} (found {len(found)})")
        stream = tar.extractfile(found[0])
        assert stream is not None
        return stream.read(), f"{path}!{found[0].name}"


ARCHIVE_SUFFIXES = (".gz", ".tgz", ".tar", ".zip", ".bz2", ".xz")


def _read_text(path: Path, member: str | None) -> tuple[str, str]:
    """The text of `path` (or of its archive member) and its display name; archives decode like plain files."""
    try:
        if member is None and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raw, where = path.read_bytes(), str(path)
        else:
            raw, where = _archive_member(path, member)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataError(f"{path}: cannot read the file ({err})") from err
    return _decode(raw, where), where


def _delimiter_hint(text: str) -> str | None:
    """'';'' or a tab when the first line has no comma but that character (a CSV saved with another separator)."""
    first = text.lstrip("\n").split("\n", 1)[0]
    if "," in first:
        return None
    for sep, shown in ((";", "';'"), ("\t", "a tab")):
        if sep in first:
            return (
                f"line 1 {first[:60]!r} is a single column containing {shown}: the file looks separated by "
                f"{shown}, not commas; pass sep={sep!r} to dlchapter.data.load_csv, or save it with commas "
                f"(pandas: pd.read_csv(path, sep={sep!r}).to_csv(new_path, index=False))"
            )
    return None


def _check_header(text: str, where: str, sep: str = ",") -> None:
    """Refuse a header naming a column twice (pandas would silently rename the copy 'name.1')."""
    first = text.lstrip("\n").split("\n", 1)[0]
    names = [n.strip().strip('"') for n in next(csv.reader(io.StringIO(first), delimiter=sep), [])]
    seen: dict[str, int] = {}
    for field_number, name in enumerate(names, start=1):
        if name in seen:
            raise DataError(
                f"{where}: line 1: column {name!r} appears more than once in the header (fields {seen[name]} and "
                f"{field_number}); every column needs its own name: rename or remove the extra copy"
            )
        seen[name] = field_number


def _looks_like_header(text: str, sep: str = ",") -> bool:
    first = text.lstrip().split("\n", 1)[0].split(sep, 1)[0].strip().strip('"')
    try:
        float(first)
    except ValueError:
        return True
    return False


def read_checked(
    path: str | Path,
    columns: Sequence[str],
    numeric: Sequence[str],
    *,
    target: str,
    missing: str = "error",
    header: bool | None = None,
    member: str | None = None,
    sep: str = ",",
) -> tuple[pd.DataFrame, str]:
    """Read and validate a CSV; returns (frame, display name).

    The frame holds `columns` only, numeric ones as float64, others as
    stripped strings; its index is each row's line number in the file.
    ``missing="keep"`` (internal) leaves holes as NaN. ``header=None``
    detects a header row (a first field that is not a number); a headerless
    file must have exactly ``len(columns)`` fields per row. ``frame.attrs["missing"]``
    records the handling of empty cells (policy, rows_dropped, cells_imputed).

    Raises `DataError` naming the file, the line and the column for: an empty
    or header-only file, a column named twice in the header, a single column
    holding ';' or tabs (the separator is suggested), a missing column, a
    non-numeric value, a number beyond float32's finite range (|x| > 3.4e38),
    and an empty cell under ``missing="error"``. Archives (.gz, .zip, .tar,
    .tgz) are decoded exactly like plain files (UTF-8 with or without a
    byte-order mark, LF, CRLF or CR line ends).
    """
    if missing not in (*MISSING_POLICIES, "keep"):
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    path = Path(path)
    text, where = _read_text(path, member)
    if not text.strip():
        raise DataError(f"{where}: line 1: the file is empty; expected a header and rows with columns {list(columns)}")
    if header is None:
        header = _looks_like_header(text, sep)
    hint = _delimiter_hint(text) if sep == "," else None
    if header:
        _check_header(text, where, sep)
    try:
        frame = pd.read_csv(
            io.StringIO(text), header=0 if header else None, dtype=str, sep=sep,
            keep_default_na=False, na_filter=False, skipinitialspace=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{where}: {hint}" if hint else f"{where}: malformed CSV ({err})") from err
    if frame.shape[1] == 1 and hint:
        raise DataError(f"{where}: {hint}")
    if header:
        frame.columns = [str(c).strip().strip('"') for c in frame.columns]
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise DataError(
                f"{where}: line 1: missing column(s) {absent}; expected columns {list(columns)}, "
                f"found {list(frame.columns)}"
            )
    elif frame.shape[1] != len(columns):
        raise DataError(
            f"{where}: line 1: {frame.shape[1]} fields per row, expected {len(columns)} ({', '.join(columns)})"
        )
    else:
        frame.columns = list(columns)
    if len(frame) == 0:
        raise DataError(f"{where}: line 1 is a header with no data rows after it; expected rows of {list(columns)}")
    frame = frame[list(columns)]
    frame.index = np.arange(len(frame)) + (2 if header else 1)
    result = _validate(frame, where, numeric, target, missing)
    if result.empty:
        raise DataError(f"{where}: lines {frame.index[0]}-{frame.index[-1]}: no row is left after missing={missing!r} "
                        f"dropped {len(frame)} row(s) with empty cells")
    return result, where


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _validate(frame: pd.DataFrame, where: str, numeric: Sequence[str], target: str, missing: str) -> pd.DataFrame:
    out = {}
    holes = {}
    for col in frame.columns:
        raw = frame[col].astype(str).str.strip().str.strip('"')
        hole = raw.str.lower().isin(_NA) | frame[col].isna()
        if col in numeric:
            values = pd.to_numeric(raw.mask(hole, "nan"), errors="coerce").astype(np.float64)
            bad = ~hole & ~np.isfinite(values)
            if bad.any():
                line = bad.index[bad.to_numpy()][0]
                raise DataError(
                    f"{where}: column {col!r}, line {line}: {raw[line]!r} is not a finite number "
                    f"(column {col!r} must be numeric; {int(bad.sum())} bad cell(s) in all)"
                )
            big = ~hole & (values.abs() > _FLOAT32_MAX)
            if big.any():
                line = big.index[big.to_numpy()][0]
                raise DataError(
                    f"{where}: column {col!r}, line {line}: {raw[line]!r} is beyond float32's finite range "
                    f"(|x| <= {_FLOAT32_MAX:.7g}); {int(big.sum())} such cell(s) in the column; rescale the column"
                )
            out[col] = values.mask(hole)
        else:
            out[col] = raw.mask(hole)
        holes[col] = hole
    result = pd.DataFrame(out, index=frame.index)
    hole_any = pd.DataFrame(holes).any(axis=1)
    result.attrs["missing"] = {"policy": missing, "rows_dropped": 0, "cells_imputed": 0}
    if not hole_any.any():
        return result
    if missing == "error":
        line = hole_any.index[hole_any.to_numpy()][0]
        col = next(c for c in frame.columns if holes[c][line])
        raise DataError(
            f"{where}: {int(pd.DataFrame(holes).to_numpy().sum())} empty or NaN cell(s), the first in "
            f"column {col!r} at line {line}; pass missing='drop' to drop such rows or "
            f"missing='impute' to fill them (median, or the most frequent category)"
        )
    record = {"policy": missing, "rows_dropped": 0, "cells_imputed": 0}
    if missing == "drop":
        record["rows_dropped"] = int(hole_any.sum())
        result = result[~hole_any.to_numpy()]
        result.attrs["missing"] = record
        return result
    if missing == "keep":  # internal: leave the holes as NaN for the caller
        return result
    record["rows_dropped"] = int(holes[target].sum())  # a missing target cannot be imputed: drop the row
    result = result[~holes[target].to_numpy()]
    per_column = {}
    for col in result.columns:
        if col == target or not result[col].isna().any():
            continue
        present = result[col].dropna()
        if present.empty:
            raise DataError(f"{where}: column {col!r} has no values to impute from")
        fill = present.median() if col in numeric else present.mode().iloc[0]
        per_column[col] = {"cells": int(result[col].isna().sum()), "value": fill if col not in numeric else float(fill)}
        result[col] = result[col].fillna(fill)
    record["cells_imputed"] = sum(c["cells"] for c in per_column.values())
    record["imputed"] = per_column  # column -> cells filled and the value (median, or most frequent category)
    result.attrs["missing"] = record
    return result


def _encode(frame: pd.DataFrame, col: str, classes: Sequence[str], where: str) -> np.ndarray:
    values = frame[col]
    known = values.isin(classes).to_numpy()
    if not known.all():
        bad = values[~known].drop_duplicates()
        shown = ", ".join(f"{v!r} (line {line})" for line, v in list(bad.items())[:5])
        raise DataError(
            f"{where}: column {col!r}, line {bad.index[0]}: label(s) outside the known classes "
            f"{list(classes)}: {shown}"
        )
    codes, _ = label_encode(values.to_numpy(dtype=object), classes)
    return codes


def _float32(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    return frame[list(columns)].to_numpy(dtype=np.float64).astype(np.float32)


def load_diamonds(path: str | Path, missing: str = "error") -> Dataset:
    """Diamonds: price from carat, depth, table, x, y, z and one-hot cut, color, clarity (26 features).

    The columns and their order are those of ``pd.get_dummies(df.drop(columns="price"), dtype=int)``.
    """
    columns = ("carat", "cut", "color", "clarity", "depth", "table", "price", "x", "y", "z")
    frame, where = read_checked(
        path, columns, (*DIAMONDS_NUMERIC, "price"), target="price", missing=missing, header=True
    )
    blocks = [_float32(frame, DIAMONDS_NUMERIC)]
    names = list(DIAMONDS_NUMERIC)
    for col, cats in DIAMONDS_CATEGORIES.items():
        codes = _encode(frame, col, cats, where)
        blocks.append(np.eye(len(cats), dtype=np.float32)[codes])
        names += [f"{col}_{c}" for c in cats]
    return Dataset(
        name="diamonds", x=np.concatenate(blocks, axis=1), y=_float32(frame, ["price"])[:, 0],
        feature_names=tuple(names), target_name="price", task="regression", source=where,
        missing=frame.attrs.get("missing"),
    )


def load_california_housing(path: str | Path, missing: str = "error") -> Dataset:
    """California housing with scikit-learn's 8 features, derived from the StatLib columns.

    Accepts the StatLib tarball (``cal_housing.tgz``), its headerless
    ``cal_housing.data``, or a CSV with the StatLib column names as header.
    The target MedHouseVal is medianHouseValue / 100,000.
    """
    path = Path(path)
    member = "cal_housing.data" if path.name.endswith((".tgz", ".tar.gz", ".tar")) else None
    frame, where = read_checked(
        path, STATLIB_COLUMNS, STATLIB_COLUMNS, target="medianHouseValue", missing=missing, member=member
    )
    f = frame
    households = f["households"]
    if (households <= 0).any():
        line = households.index[(households <= 0).to_numpy()][0]
        raise DataError(f"{where}: column 'households', line {line}: must be positive to form averages")
    derived = pd.DataFrame({
        "MedInc": f["medianIncome"],
        "HouseAge": f["housingMedianAge"],
        "AveRooms": f["totalRooms"] / households,
        "AveBedrms": f["totalBedrooms"] / households,
        "Population": f["population"],
        "AveOccup": f["population"] / households,
        "Latitude": f["latitude"],
        "Longitude": f["longitude"],
    })
    return Dataset(
        name="california_housing", x=_float32(derived, CALIFORNIA_FEATURES),
        y=(f["medianHouseValue"].to_numpy() / 100_000.0).astype(np.float32),
        feature_names=CALIFORNIA_FEATURES, target_name="MedHouseVal", task="regression", source=where,
        missing=frame.attrs.get("missing"),
    )


def load_diabetes(path: str | Path, missing: str = "error") -> Dataset:
    """Pima Indians diabetes: 8 features and the 0/1 Outcome; headed (Kaggle) or headerless (UCI) CSV."""
    frame, where = read_checked(path, PIMA_COLUMNS, PIMA_COLUMNS, target="Outcome", missing=missing)
    outcome = frame["Outcome"]
    bad = ~outcome.isin([0.0, 1.0])
    if bad.any():
        line = outcome.index[bad.to_numpy()][0]
        raise DataError(
            f"{where}: column 'Outcome', line {line}: label {outcome[line]:g} is outside the known classes [0, 1]"
        )
    return Dataset(
        name="diabetes", x=_float32(frame, PIMA_COLUMNS[:-1]), y=outcome.to_numpy().astype(np.int64),
        feature_names=PIMA_COLUMNS[:-1], target_name="Outcome", task="binary",
        class_names=("0", "1"), source=where, missing=frame.attrs.get("missing"),
    )


def load_iris(path: str | Path | None = None, missing: str = "error") -> Dataset:
    """Iris: 4 measurements and 3 species; scikit-learn's bundled copy when `path` is None.

    A CSV may have seaborn's header (sepal_length, ..., species) or be the
    headerless UCI file; species may be written ``Iris-setosa`` or ``setosa``.
    """
    if path is None:
        from sklearn.datasets import load_iris as sklearn_iris

        bunch = sklearn_iris()
        return Dataset(
            name="iris", x=bunch.data.astype(np.float32), y=bunch.target.astype(np.int64),
            feature_names=IRIS_FEATURES, target_name="species", task="multiclass",
            class_names=IRIS_CLASSES, source="sklearn",
        )
    frame, where = read_checked(path, IRIS_COLUMNS, IRIS_COLUMNS[:4], target="species", missing=missing)
    record = frame.attrs.get("missing")
    frame["species"] = frame["species"].str.removeprefix("Iris-")
    return Dataset(
        name="iris", x=_float32(frame, IRIS_COLUMNS[:4]), y=_encode(frame, "species", IRIS_CLASSES, where),
        feature_names=IRIS_FEATURES, target_name="species", task="multiclass",
        class_names=IRIS_CLASSES, source=where, missing=record,
    )


def load_series(name: str, path: str | Path, missing: str = "error") -> Dataset:
    """A univariate series (date, value): x is float32 (steps, 1), y the same values, index the dates.

    ``missing="impute"`` interpolates linearly between neighbouring steps;
    dates must parse and increase strictly.
    """
    if name not in SERIES_COLUMNS:
        raise DataError(f"unknown series {name!r}; known: {', '.join(SERIES_COLUMNS)}")
    date_col, value_col = SERIES_COLUMNS[name]
    frame, where = read_checked(path, (date_col, value_col), (value_col,), target=date_col,
                                missing="keep" if missing == "impute" else missing, header=True)
    if missing == "impute":
        frame = frame[frame[date_col].notna().to_numpy()]
        if frame[value_col].isna().all():
            raise DataError(f"{where}: column {value_col!r} has no values to interpolate from")
        frame[value_col] = frame[value_col].interpolate(limit_direction="both")
    dates = pd.to_datetime(frame[date_col], errors="coerce", format="ISO8601")
    if dates.isna().any():
        line = dates.index[dates.isna().to_numpy()][0]
        raise DataError(
            f"{where}: column {date_col!r}, line {line}: {frame[date_col][line]!r} is not an ISO date "
            f"(YYYY-MM or YYYY-MM-DD)"
        )
    steps = np.diff(dates.to_numpy().astype("datetime64[ns]").astype(np.int64))
    if (steps <= 0).any():
        line = frame.index[int(np.flatnonzero(steps <= 0)[0]) + 1]
        raise DataError(f"{where}: column {date_col!r}, line {line}: dates must increase strictly")
    values = frame[value_col].to_numpy(dtype=np.float64).astype(np.float32)
    return Dataset(
        name=name, x=values[:, None], y=values.copy(), feature_names=(value_col,),
        target_name=value_col, task="series", source=where,
        index=frame[date_col].to_numpy().astype(str),
    )

