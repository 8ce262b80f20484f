"""Reading a CSV file and validating its cells; the checks every tabular loader shares.

`read_checked` returns a frame of the requested columns, numeric ones as
float64, with each row's line number in the file as its index. Every problem
raises a `DataError` naming the file, the line and the column, and saying what
was expected: an empty or header-only file, a column named twice, a single
column holding ';' or tabs (the separator is suggested), a missing column, a
non-numeric value, a number beyond float32's finite range, an empty or NaN
cell (unless ``missing="drop"`` or ``missing="impute"``). Archives (.gz, .zip,
.tar, .tgz) are decoded exactly like plain files: UTF-8 with or without a
byte-order mark, LF, CRLF or CR line ends.
"""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from dlchapter.data.sources import DataError

MISSING_POLICIES = ("error", "drop", "impute")
_NA = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


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
                f"{shown}, not commas; pass --sep {sep!r} on the command line (sep={sep!r} to "
                "dlchapter.data.load_csv), or save it with commas "
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
    import pandas as pd  # imported on first use (cold start)

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
            io.StringIO(text),
            header=0 if header else None,
            dtype=str,
            sep=sep,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
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
        raise DataError(
            f"{where}: lines {frame.index[0]}-{frame.index[-1]}: no row is left after missing={missing!r} "
            f"dropped {len(frame)} row(s) with empty cells"
        )
    return result, where


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _validate(frame: pd.DataFrame, where: str, numeric: Sequence[str], target: str, missing: str) -> pd.DataFrame:
    import pandas as pd  # imported on first use (cold start)

    out = {}
    holes = {}
    for col in frame.columns:
        if col in numeric:  # fast path: every cell a finite float32-range number (no hole, nothing to strip)
            values = pd.to_numeric(frame[col], errors="coerce")
            if values.notna().all() and np.isfinite(values).all() and (values.abs() <= _FLOAT32_MAX).all():
                out[col] = values.astype(np.float64)
                holes[col] = pd.Series(False, index=frame.index)
                continue
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
            f"column {col!r} at line {line}; to drop such rows pass missing='drop' (on the command line: "
            f"--missing drop), to fill them missing='impute' (--missing impute: median, or the most frequent "
            f"category)"
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
