"""CSV loaders for the chapter's tables and time series, with validation.

Every problem in a file raises a `DataError` that names the file, the column
and the line, and says what was expected: the checks of every CSV
(`dlchapter.data.csvfile.read_checked`: empty or header-only files, repeated
column names, wrong separators, missing columns, non-numeric or out-of-float32
values, empty cells unless ``missing="drop"`` or ``missing="impute"``) and,
here, a class label outside the known ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from dlchapter.data.csvfile import MISSING_POLICIES, read_checked  # noqa: F401 (re-exported as tabular.*)
from dlchapter.data.preprocessing import label_encode
from dlchapter.data.sources import DataError, Dataset

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
    "longitude",
    "latitude",
    "housingMedianAge",
    "totalRooms",
    "totalBedrooms",
    "population",
    "households",
    "medianIncome",
    "medianHouseValue",
)
CALIFORNIA_FEATURES = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
PIMA_COLUMNS = (
    "Pregnancies",
    "Glucose",
    "BloodPressure",
    "SkinThickness",
    "Insulin",
    "BMI",
    "DiabetesPedigreeFunction",
    "Age",
    "Outcome",
)
IRIS_COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width", "species")
IRIS_FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")
SERIES_COLUMNS = {  # data set -> (date column, value column)
    "daily_min_temperatures": ("Date", "Temp"),
    "airline_passengers": ("Month", "Passengers"),
    "monthly_sunspots": ("Month", "Sunspots"),
}


def _encode(frame: pd.DataFrame, col: str, classes: Sequence[str], where: str) -> np.ndarray:
    values = frame[col]
    known = values.isin(classes).to_numpy()
    if not known.all():
        bad = values[~known].drop_duplicates()
        shown = ", ".join(f"{v!r} (line {line})" for line, v in list(bad.items())[:5])
        raise DataError(
            f"{where}: column {col!r}, line {bad.index[0]}: label(s) outside the known classes {list(classes)}: {shown}"
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
        name="diamonds",
        x=np.concatenate(blocks, axis=1),
        y=_float32(frame, ["price"])[:, 0],
        feature_names=tuple(names),
        target_name="price",
        task="regression",
        source=where,
        missing=frame.attrs.get("missing"),
    )


def load_california_housing(path: str | Path, missing: str = "error") -> Dataset:
    """California housing with scikit-learn's 8 features, derived from the StatLib columns.

    Accepts the StatLib tarball (``cal_housing.tgz``), its headerless
    ``cal_housing.data``, or a CSV with the StatLib column names as header.
    The target MedHouseVal is medianHouseValue / 100,000.
    """
    import pandas as pd  # imported on first use (cold start)

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
    derived = pd.DataFrame(
        {
            "MedInc": f["medianIncome"],
            "HouseAge": f["housingMedianAge"],
            "AveRooms": f["totalRooms"] / households,
            "AveBedrms": f["totalBedrooms"] / households,
            "Population": f["population"],
            "AveOccup": f["population"] / households,
            "Latitude": f["latitude"],
            "Longitude": f["longitude"],
        }
    )
    return Dataset(
        name="california_housing",
        x=_float32(derived, CALIFORNIA_FEATURES),
        y=(f["medianHouseValue"].to_numpy() / 100_000.0).astype(np.float32),
        feature_names=CALIFORNIA_FEATURES,
        target_name="MedHouseVal",
        task="regression",
        source=where,
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
        name="diabetes",
        x=_float32(frame, PIMA_COLUMNS[:-1]),
        y=outcome.to_numpy().astype(np.int64),
        feature_names=PIMA_COLUMNS[:-1],
        target_name="Outcome",
        task="binary",
        class_names=("0", "1"),
        source=where,
        missing=frame.attrs.get("missing"),
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
            name="iris",
            x=bunch.data.astype(np.float32),
            y=bunch.target.astype(np.int64),
            feature_names=IRIS_FEATURES,
            target_name="species",
            task="multiclass",
            class_names=IRIS_CLASSES,
            source="sklearn",
        )
    frame, where = read_checked(path, IRIS_COLUMNS, IRIS_COLUMNS[:4], target="species", missing=missing)
    record = frame.attrs.get("missing")
    frame["species"] = frame["species"].str.removeprefix("Iris-")
    return Dataset(
        name="iris",
        x=_float32(frame, IRIS_COLUMNS[:4]),
        y=_encode(frame, "species", IRIS_CLASSES, where),
        feature_names=IRIS_FEATURES,
        target_name="species",
        task="multiclass",
        class_names=IRIS_CLASSES,
        source=where,
        missing=record,
    )


def load_series(name: str, path: str | Path, missing: str = "error") -> Dataset:
    """A univariate series (date, value): x is float32 (steps, 1), y the same values, index the dates.

    ``missing="impute"`` interpolates linearly between neighbouring steps;
    dates must parse and increase strictly.
    """
    import pandas as pd  # imported on first use (cold start)

    if name not in SERIES_COLUMNS:
        raise DataError(f"unknown series {name!r}; known: {', '.join(SERIES_COLUMNS)}")
    date_col, value_col = SERIES_COLUMNS[name]
    frame, where = read_checked(
        path,
        (date_col, value_col),
        (value_col,),
        target=date_col,
        missing="keep" if missing == "impute" else missing,
        header=True,
    )
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
        name=name,
        x=values[:, None],
        y=values.copy(),
        feature_names=(value_col,),
        target_name=value_col,
        task="series",
        source=where,
        index=frame[date_col].to_numpy().astype(str),
    )
