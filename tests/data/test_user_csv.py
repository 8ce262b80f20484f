"""`load_csv` (a researcher's own CSV) against pandas, its refusals, and the training-rows-only one-hot encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlchapter.data import DataError, Dataset, load_csv
from dlchapter.data.preprocessing import CategoricalEncoder, filter_max_target


def _houses(tmp_path: Path, n: int = 40, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "rooms": rng.integers(1, 8, n),
            "area": rng.normal(80, 20, n).round(2),
            "region": rng.choice(["north", "south", "east"], n),
            "age": rng.integers(0, 90, n),
            "price": rng.normal(3e5, 5e4, n).round(0),
        }
    )
    path = tmp_path / "houses.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_regression_with_a_categorical_column_matches_pandas(tmp_path: Path) -> None:
    path, frame = _houses(tmp_path)
    ds = load_csv(path, target="price", categorical=("region",))
    assert isinstance(ds, Dataset) and (ds.name, ds.task, ds.target_name) == ("houses", "regression", "price")
    assert ds.feature_names == ("rooms", "area", "age") and ds.categorical_names == ("region",)
    np.testing.assert_array_equal(ds.x, frame[["rooms", "area", "age"]].to_numpy(np.float32))
    np.testing.assert_array_equal(ds.y, frame["price"].to_numpy(np.float32))
    np.testing.assert_array_equal(ds.categorical[:, 0], frame["region"].to_numpy(object))
    np.testing.assert_array_equal(ds.index, np.arange(len(frame)) + 2)  # line numbers: the header is line 1
    assert ds.missing == {"policy": "error", "rows_dropped": 0, "cells_imputed": 0}
    kept = filter_max_target(ds, 3e5)  # every per-row field follows the rows kept
    assert kept.categorical.shape[0] == kept.x.shape[0] == kept.index.shape[0] == int((frame.price < 3e5).sum())


def test_classification_targets_numbers_by_value_and_strings_alphabetically(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("a,b,y\n1,2,10\n3,4,9\n5,6,10\n7,8,9\n")
    ds = load_csv(path, target="y", task="binary")
    assert ds.class_names == ("9", "10") and ds.y.tolist() == [1, 0, 1, 0] and ds.y.dtype == np.int64
    path.write_text("a,b,y\n1,2,setosa\n3,4,virginica\n5,6,versicolor\n")
    ds = load_csv(path, target="y", task="multiclass")
    assert ds.class_names == ("setosa", "versicolor", "virginica") and ds.y.tolist() == [0, 2, 1]


def test_missing_cells_drop_and_impute_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("a,b,region,y\n1,,n,1.5\n2,4,,2.5\n3,6,s,\n4,8,s,4.5\n5,10,n,5.5\n")
    with pytest.raises(DataError, match=r"m\.csv: 3 empty or NaN cell\(s\), the first in column 'b' at line 2"):
        load_csv(path, target="y", categorical=("region",))
    dropped = load_csv(path, target="y", categorical=("region",), missing="drop")
    assert len(dropped) == 2 and dropped.missing == {"policy": "drop", "rows_dropped": 3, "cells_imputed": 0}
    imputed = load_csv(path, target="y", categorical=("region",), missing="impute")
    assert len(imputed) == 4 and imputed.missing["rows_dropped"] == 1 and imputed.missing["cells_imputed"] == 2
    assert imputed.x[0, 1] == np.median([4, 8, 10])  # the median of the rows that keep a target
    assert imputed.missing["imputed"] == {"b": {"cells": 1, "value": 8.0}, "region": {"cells": 1, "value": "n"}}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"target": "prise"}, ["line 1", "no column 'prise'", "Did you mean 'price'"]),
        ({"target": "price", "categorical": ("regoin",)}, ["line 1", "'regoin'", "'region'"]),
        ({"target": "price"}, ["column 'region'", "line 2", "categorical="]),
        ({"target": "region", "task": "binary"}, ["column 'region'", "exactly 2 classes", "line 2", "multiclass"]),
    ],
)
def test_refusals_name_file_column_and_line(tmp_path: Path, kwargs: dict, words: list[str]) -> None:
    path, _ = _houses(tmp_path)
    with pytest.raises(DataError) as caught:
        load_csv(path, **kwargs)
    assert str(path) in str(caught.value)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_semicolon_file_is_refused_then_read_with_sep(tmp_path: Path) -> None:
    path, frame = _houses(tmp_path)
    frame.to_csv(path, index=False, sep=";")
    with pytest.raises(DataError, match="sep=';'"):
        load_csv(path, target="price", categorical=("region",))
    ds = load_csv(path, target="price", categorical=("region",), sep=";")
    np.testing.assert_array_equal(ds.y, frame["price"].to_numpy(np.float32))


def test_categorical_encoder_uses_training_categories_only(tmp_path: Path) -> None:
    train = np.array([["b", "x"], ["a", "y"], ["b", "y"]], dtype=object)
    encoder = CategoricalEncoder.fit(train, ("letter", "axis"))
    expected = pd.get_dummies(pd.DataFrame(train, columns=["letter", "axis"]), dtype=np.float32)
    np.testing.assert_array_equal(encoder.transform(train), expected.to_numpy())
    assert encoder.feature_names == tuple(expected.columns)
    test = np.array([["a", "y"], ["c", "x"]], dtype=object)
    with pytest.raises(
        DataError, match=r"f\.csv: column 'letter', line 8: category 'c' does not occur in the training rows"
    ):
        encoder.transform(test, lines=np.array([7, 8]), where="f.csv")
    ignoring = CategoricalEncoder.fit(train, ("letter", "axis"), handle_unknown="ignore")
    np.testing.assert_array_equal(ignoring.transform(test), [[1, 0, 0, 1], [0, 0, 1, 0]])


def test_dropping_every_row_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "holes.csv"
    path.write_text("a,b,y\n1,,2\n,3,4\n")
    with pytest.raises(DataError, match=r"holes\.csv: lines 2-3: no row is left after missing='drop'"):
        load_csv(path, target="y", missing="drop")


def test_an_unknown_category_error_caps_a_long_list_of_known_ones():
    from dlchapter.data.sources import shown_values

    train = np.array([[f"house {i}"] for i in range(240)], dtype=object)
    encoder = CategoricalEncoder.fit(train, ("note",))
    with pytest.raises(DataError) as raised:
        encoder.transform(np.array([["house 0"], ["house 999"]], dtype=object), where="h.csv")
    message = str(raised.value)
    assert "row 2: category 'house 999'" in message and "(240 known: ['house 0', 'house 1', " in message
    assert "... and 232 more]" in message and len(message) < 300 and "house 99'" not in message
    assert shown_values(["a", "b"]) == "['a', 'b']" and shown_values(list("abcdefghi")) == str(list("abcdefghi"))
    assert shown_values(list("abcdefghij")) == "['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', ... and 2 more]"
