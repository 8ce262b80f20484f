"""The public API: names, laziness, py.typed."""

import subprocess
import sys
from pathlib import Path

import pytest

import dlchapter


def test_import_dlchapter_is_light():
    code = "import sys, dlchapter; print(sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves_to_the_defining_object():
    from dlchapter import (
        Trainer,
        create_train_state,
        restore_model,  # noqa: F401
        save_model,
    )
    from dlchapter.checkpoint.model_io import save_model as defined
    from dlchapter.engine.train import Trainer as trainer_defined

    assert save_model is defined and Trainer is trainer_defined
    from dlchapter import Callback, CheckpointHook, EarlyStoppingHook, FitRun, LambdaCallback, nnx_model
    from dlchapter.engine.fit_hooks import Callback as callback_defined
    from dlchapter.engine.train_state import create_train_state as create_defined
    from dlchapter.engine.train_state import nnx_model as nnx_defined

    assert Callback is callback_defined and nnx_model is nnx_defined and create_train_state is create_defined
    assert issubclass(CheckpointHook, Callback) and issubclass(EarlyStoppingHook, Callback)
    assert issubclass(LambdaCallback, Callback) and FitRun.__module__ == "dlchapter.engine.fit_hooks"
    for name in dlchapter.__all__:
        assert getattr(dlchapter, name) is not None
    assert set(dlchapter.__all__) <= set(dir(dlchapter))


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'fit_everything'"):
        dlchapter.fit_everything  # noqa: B018


def test_package_is_typed():
    root = Path(dlchapter.__file__).parent
    assert (root / "py.typed").is_file()
    assert 'dlchapter = ["py.typed"]' in (root.parent / "pyproject.toml").read_text()
