"""CSV loaders against pandas/scikit-learn references, and every bad-input case with its error."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlchapter.data import DataError, load, tabular

DIAMONDS_HEAD = (
    '"carat","cut","color","clarity","depth","table","price","x","y","z"\n'
    '0.23,"Ideal","E","SI2",61.5,55,326,3.95,3.98,2.43\n'
    '0.21,"Premium","E","SI1",59.8,61,326,3.89,3.84,2.31\n'
    '0.23,"Good","E","VS1",56.9,65,327,4.05,4.07,2.31\n'
    '0.29,"Premium","I","VS2",62.4,58,334,4.2,4.23,2.63\n'
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- real files against references ----------------------------------------------------------------


def test_diamonds_equals_get_dummies(shared_data: Path) -> None:
    ds = load("diamonds", shared_data)
    frame = pd.read_csv(shared_data / "diamonds.csv")
    expected = pd.get_dummies(frame.drop(columns="price"), dtype=int)
    assert ds.x.shape == (53_940, 26) and ds.x.dtype == np.float32
    assert ds.feature_names == tuple(expected.columns)
    np.testing.assert_array_equal(ds.x, expected.to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(ds.y, frame["price"].to_numpy(dtype=np.float32))
    assert (ds.target_name, ds.task, ds.class_names, ds.n_classes) == ("price", "regression", None, None)


def _sklearn_california(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's fetch_california_housing derivation, written out independently."""
    f = frame.astype(np.float64)
    x = pd.DataFrame(
        {
            "MedInc": f["medianIncome"],
            "HouseAge": f["housingMedianAge"],
            "AveRooms": f["totalRooms"] / f["households"],
            "AveBedrms": f["totalBedrooms"] / f["households"],
            "Population": f["population"],
            "AveOccup": f["population"] / f["households"],
            "Latitude": f["latitude"],
            "Longitude": f["longitude"],
        }
    )
    return x.to_numpy(), f["medianHouseValue"].to_numpy() / 100_000.0


def test_california_matches_sklearn_derivation(shared_data: Path) -> None:
    ds = load("california_housing", shared_data)
    frame = pd.read_csv(shared_data / "cal_housing.csv", skipinitialspace=True)
    x_ref, y_ref = _sklearn_california(frame)
    assert ds.x.shape == (20_640, 8)
    assert ds.feature_names == (
        "MedInc",
        "HouseAge",
        "AveRooms",
        "AveBedrms",
        "Population",
        "AveOccup",
        "Latitude",
        "Longitude",
    )
    assert ds.target_name == "MedHouseVal" and ds.task == "regression"
    np.testing.assert_allclose(ds.x, x_ref, rtol=1e-6)
    np.testing.assert_allclose(ds.y, y_ref, rtol=1e-6)
    assert 0.14 < ds.y.min() < 0.15 and ds.y.max() == pytest.approx(5.00001)


def test_california_value_below_5_filter(shared_data: Path) -> None:
    full = load("california_housing", shared_data)
    kept = load("california_housing", shared_data, max_value=5.0)
    assert len(kept) == int((full.y < 5.0).sum()) == 19_648 < len(full)
    assert kept.y.max() < 5.0
    np.testing.assert_array_equal(kept.x, full.x[full.y < 5.0])


def test_california_tarball_and_headerless_data_give_the_same_arrays(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "cal_housing.csv").read_text().splitlines()[:201]
    headed = _write(tmp_path, "cal_housing.csv", "\n".join(lines) + "\n")
    data_text = "\n".join(lines[1:]) + "\n"
    raw = _write(tmp_path, "cal_housing.data", data_text)
    tgz = tmp_path / "cal_housing.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("CaliforniaHousing/cal_housing.data")
        info.size = len(data_text.encode())
        tar.addfile(info, io.BytesIO(data_text.encode()))
    ref = load("california_housing", path=headed)
    for other in (raw, tgz):
        ds = load("california_housing", path=other)
        assert len(ds) == 200
        np.testing.assert_array_equal(ds.x, ref.x)
        np.testing.assert_array_equal(ds.y, ref.y)
    assert ds.source.endswith("cal_housing.tgz!CaliforniaHousing/cal_housing.data")


def test_diabetes_headed_and_headerless_are_identical(shared_data: Path) -> None:
    kaggle = load("diabetes", path=shared_data / "diabetes.csv")
    uci = load("diabetes", path=shared_data / "pima-indians-diabetes.csv")
    frame = pd.read_csv(shared_data / "diabetes.csv")
    assert kaggle.x.shape == (768, 8) and kaggle.feature_names == tuple(frame.columns[:-1])
    np.testing.assert_array_equal(kaggle.x, frame.iloc[:, :8].to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(kaggle.y, frame["Outcome"].to_numpy())
    np.testing.assert_array_equal(kaggle.x, uci.x)
    np.testing.assert_array_equal(kaggle.y, uci.y)
    assert kaggle.y.dtype == np.int64 and kaggle.task == "binary" and kaggle.n_classes == 2
    assert set(np.unique(kaggle.y)) == {0, 1} and int(kaggle.y.sum()) == 268


def test_iris_from_sklearn_and_from_csv_agree(shared_data: Path) -> None:
    from sklearn.datasets import load_iris

    bundled = load("iris")
    assert bundled.source == "sklearn" and bundled.x.shape == (150, 4)
    reference = load_iris()
    np.testing.assert_array_equal(bundled.x, reference.data.astype(np.float32))
    np.testing.assert_array_equal(bundled.y, reference.target)
    assert bundled.class_names == tuple(reference.target_names)
    assert bundled.feature_names == tuple(reference.feature_names)
    from_csv = load("iris", shared_data)
    assert from_csv.source.endswith("iris.csv")
    np.testing.assert_array_equal(from_csv.x, bundled.x)
    np.testing.assert_array_equal(from_csv.y, bundled.y)
    assert np.bincount(from_csv.y).tolist() == [50, 50, 50]


def test_iris_uci_headerless_with_prefixed_names(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "iris.data",
        "5.1,3.5,1.4,0.2,Iris-setosa\n7.0,3.2,4.7,1.4,Iris-versicolor\n6.3,3.3,6.0,2.5,Iris-virginica\n",
    )
    ds = load("iris", path=path)
    assert ds.y.tolist() == [0, 1, 2] and ds.x[2, 2] == np.float32(6.0)


@pytest.mark.parametrize(
    ("name", "rows", "first"),
    [
        ("daily_min_temperatures", 3650, "1981-01-01"),
        ("airline_passengers", 144, "1949-01"),
        ("monthly_sunspots", 2820, "1749-01"),
    ],
)
def test_series_row_counts_and_dates(shared_data: Path, name: str, rows: int, first: str) -> None:
    ds = load(name, shared_data)
    frame = pd.read_csv(next(shared_data.glob(name.replace("_", "-") + ".csv")))
    assert ds.x.shape == (rows, 1) and ds.x.dtype == np.float32 and ds.task == "series"
    np.testing.assert_array_equal(ds.x[:, 0], frame.iloc[:, 1].to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(ds.y, ds.x[:, 0])
    assert ds.index is not None and ds.index[0] == first and ds.index.dtype.kind == "U"


# --- bad input -------------------------------------------------------------------------------------


def test_missing_or_renamed_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "diamonds.csv", DIAMONDS_HEAD.replace('"carat"', '"karat"'))
    with pytest.raises(DataError) as info:
        load("diamonds", path=path)
    message = str(info.value)
    assert str(path) in message and "missing column(s) ['carat']" in message and "'karat'" in message


def test_non_numeric_value_names_file_column_line_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "diamonds.csv", DIAMONDS_HEAD.replace("59.8", "59,8x").replace(",59,8x,", ',"59.8x",'))
    with pytest.raises(DataError) as info:
        load("diamonds", path=path)
    message = str(info.value)
    assert str(path) in message and "column 'depth', line 3" in message and "'59.8x'" in message


def test_infinite_value_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "diabetes.csv", "6,148,72,35,0,inf,0.627,50,1\n")
    with pytest.raises(DataError, match="column 'BMI', line 1: 'inf' is not a finite number"):
        load("diabetes", path=path)


def test_empty_cells_error_by_default_then_drop_or_impute(tmp_path: Path) -> None:
    text = DIAMONDS_HEAD.replace("61.5", "").replace('"Good","E"', '"Good",""')
    path = _write(tmp_path, "diamonds.csv", text)
    with pytest.raises(DataError) as info:
        load("diamonds", path=path)
    message = str(info.value)
    assert str(path) in message and "2 empty or NaN cell(s)" in message and "column 'depth' at line 2" in message
    assert "missing='drop'" in message
    dropped = load("diamonds", path=path, missing="drop")
    assert len(dropped) == 2
    np.testing.assert_array_equal(dropped.y, [326, 334])
    imputed = load("diamonds", path=path, missing="impute")
    assert len(imputed) == 4
    depth = imputed.x[:, imputed.feature_names.index("depth")]
    assert depth[0] == np.float32(np.median([59.8, 56.9, 62.4]))
    assert imputed.x[2, imputed.feature_names.index("color_E")] == 1.0  # most frequent colour


def test_nan_text_counts_as_missing_and_missing_target_is_dropped_under_impute(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "d.csv", "6,148,72,35,0,NaN,0.627,50,1\n1,85,66,29,0,26.6,0.351,31,\n8,183,64,0,0,23.3,0.672,32,1\n"
    )
    with pytest.raises(DataError, match="NaN"):
        load("diabetes", path=path)
    ds = load("diabetes", path=path, missing="impute")
    assert len(ds) == 2 and ds.x[0, 5] == np.float32(23.3)  # median of the remaining BMI
    with pytest.raises(ValueError, match="missing must be one of"):
        load("diabetes", path=path, missing="zero")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("diamonds", DIAMONDS_HEAD.replace('"Premium","I"', '"Excellent","I"'), "column 'cut', line 5"),
        (
            "iris",
            "sepal_length,sepal_width,petal_length,petal_width,species\n5.1,3.5,1.4,0.2,setosa\n"
            "5.0,3.0,1.0,0.1,unicorn\n",
            "column 'species', line 3",
        ),
        ("diabetes", "6,148,72,35,0,33.6,0.627,50,1\n1,85,66,29,0,26.6,0.351,31,2\n", "column 'Outcome', line 2"),
    ],
)
def test_label_outside_known_classes(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = _write(tmp_path, f"{name}.csv", text)
    with pytest.raises(DataError) as info:
        load(name, path=path)
    message = str(info.value)
    assert str(path) in message and expected in message and "outside the known classes" in message


def test_wrong_number_of_fields_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="7 fields per row, expected 9"):
        load("diabetes", path=_write(tmp_path, "a.csv", "6,148,72,35,0,33.6,0.627\n"))
    with pytest.raises(DataError, match="the file is empty"):
        load("diabetes", path=_write(tmp_path, "b.csv", "\n"))
    with pytest.raises(DataError, match="malformed CSV"):
        load("diamonds", path=_write(tmp_path, "c.csv", DIAMONDS_HEAD + "1,2,3,4,5,6,7,8,9,10,11,12\n"))


def test_series_missing_values_interpolate_and_bad_dates(tmp_path: Path) -> None:
    text = '"Month","Passengers"\n"1949-01",100\n"1949-02",\n"1949-03",120\n"1949-04",130\n'
    path = _write(tmp_path, "airline-passengers.csv", text)
    with pytest.raises(DataError, match="column 'Passengers' at line 3"):
        load("airline_passengers", path=path)
    assert load("airline_passengers", path=path, missing="impute").y.tolist() == [100, 110, 120, 130]
    assert load("airline_passengers", path=path, missing="drop").index.tolist() == ["1949-01", "1949-03", "1949-04"]
    bad = _write(tmp_path, "bad.csv", text.replace('"1949-03"', '"March"'))
    with pytest.raises(DataError, match="line 4: 'March' is not an ISO date"):
        load("airline_passengers", path=bad, missing="drop")
    backwards = _write(tmp_path, "back.csv", '"Month","Passengers"\n"1949-02",1\n"1949-01",2\n')
    with pytest.raises(DataError, match="dates must increase"):
        load("airline_passengers", path=backwards)


def test_split_and_max_value_are_checked(shared_data: Path) -> None:
    with pytest.raises(ValueError, match="no predefined splits"):
        load("iris", split="test")
    with pytest.raises(ValueError, match="needs regression"):
        load("iris", max_value=5.0)
    with pytest.raises(ValueError, match="only for mnist"):
        load("iris", via="tfds")


def test_read_checked_keeps_line_numbers(tmp_path: Path) -> None:
    frame, where = tabular.read_checked(
        _write(tmp_path, "d.csv", DIAMONDS_HEAD), ("carat", "cut"), ("carat",), target="carat"
    )
    assert frame.index.tolist() == [2, 3, 4, 5] and where.endswith("d.csv")
    assert frame["carat"].dtype == np.float64 and frame["cut"].tolist()[0] == "Ideal"
