"""Cold start: what each entry point imports, checked as module lists (not wall clock, which load distorts).

- `dlchapter list`, `dlchapter --help`: no experiment, preset, JAX or any heavy package (tests/test_cli.py);
- `dlchapter run NAME --help`, `dlchapter sweep --help`: tyro and the config dataclasses only, no JAX (so no program
  can compile);
- `import dlchapter.engine.train` (the engine): JAX, Flax and optax, none of scikit-learn, pandas, SciPy, matplotlib,
  orbax, tensorboardX, PyTorch or tyro;
- tensorboardX's writer without PyTorch (its `import torch` costs a second of every run where torch is installed).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import weakref

import pytest

from dlchapter.presets import EXPERIMENTS

HEAVY_FOR_ENGINE = (
    "sklearn",
    "pandas",
    "scipy",
    "matplotlib",
    "orbax",
    "tensorboardX",
    "torch",
    "tyro",
    "tensorstore",
    "xgboost",
)
HEAVY_FOR_HELP = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "sklearn",
    "pandas",
    "scipy",
    "matplotlib",
    "orbax",
    "tensorboardX",
    "torch",
    "tensorstore",
    "xgboost",
    "experiments",
)  # tyro parses the flags
HEAVY_OWN_FOR_HELP = (
    "dlchapter.runs",
    "dlchapter.engine.train",
    "dlchapter.data",
    "dlchapter.reporting.figures",
    "dlchapter.reporting.plots",
    "dlchapter.checkpoint.store",
)

# Prints the top-level packages (and dlchapter modules) among `watch` that are in sys.modules after `code`.
_PROBE = """
import json, sys
watch, own, code = json.loads(sys.argv[1])
try:
    exec(code)
except SystemExit as stop:
    assert stop.code in (0, None), stop.code
loaded = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in watch}
                | {m for m in sys.modules if m.startswith(tuple(own))})
print(json.dumps(loaded))
"""


def _loaded_after(code: str, watch: tuple[str, ...], own: tuple[str, ...] = ()) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([watch, own, code])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_help_imports_no_jax_and_no_run_module(name):
    code = f"from dlchapter import cli; cli.main(['run', {name!r}, '--help'])"
    assert _loaded_after(code, HEAVY_FOR_HELP, HEAVY_OWN_FOR_HELP) == []


def test_sweep_help_imports_no_jax_and_no_run_module():
    code = "from dlchapter import cli; cli.main(['sweep', '--help'])"
    assert _loaded_after(code, HEAVY_FOR_HELP, HEAVY_OWN_FOR_HELP) == []
    shown = subprocess.run(
        [sys.executable, "-m", "dlchapter.cli", "sweep", "--help"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "--learning-rates" in shown.stdout and "pima_kfold" in shown.stdout, shown


def test_the_sweep_probe_sees_the_run_module():  # the check above can fail: the sweep's run module imports JAX
    loaded = _loaded_after("import dlchapter.runs.sweep_runs", HEAVY_FOR_HELP, HEAVY_OWN_FOR_HELP)
    assert {"jax", "dlchapter.runs.sweep_runs", "dlchapter.engine.train"} <= set(loaded)


def test_the_probe_sees_heavy_imports():  # the check above can fail: a run module does import them
    code = "import dlchapter.runs.tabular_runs"
    loaded = _loaded_after(code, HEAVY_FOR_HELP, HEAVY_OWN_FOR_HELP)
    assert {"jax", "flax", "optax", "numpy", "dlchapter.runs.tabular_runs", "dlchapter.engine.train"} <= set(loaded)


def test_engine_and_public_api_import_only_jax_flax_optax():
    code = (
        "import dlchapter.engine.train, dlchapter.engine.fitting; "
        "import dlchapter as dl; dl.Trainer, dl.save_model, dl.Metric"
    )
    assert _loaded_after(code, HEAVY_FOR_ENGINE) == []
    assert {"jax", "flax", "optax"} <= set(_loaded_after(code, ("jax", "flax", "optax")))


_LINEN_STATE = (
    "import jax, numpy as np, optax, flax.linen as nn; from dlchapter.engine.train_state import create_train_state; "
    "create_train_state(nn.Dense(1), optax.sgd(0.1), np.zeros((4, 3), np.float32), jax.random.key(0))"
)


def test_a_linen_model_never_imports_flax_nnx():  # flax.nnx costs ~0.07 s of each run's start
    assert _loaded_after(_LINEN_STATE, (), ("flax.nnx",)) == []


def test_the_probe_sees_flax_nnx_when_a_model_is_one():  # the check above can fail
    code = _LINEN_STATE.replace("flax.linen as nn", "flax.nnx as nn").replace(
        "nn.Dense(1)", "nn.Linear(3, 1, rngs=nn.Rngs(0))"
    )
    assert "flax.nnx" in _loaded_after(code, (), ("flax.nnx",))


def test_tabular_run_module_leaves_checkpoints_and_preprocessing_libraries_until_used():
    assert (
        _loaded_after("import dlchapter.runs.tabular_runs", ("orbax", "tensorboardX", "torch", "sklearn", "scipy"))
        == []
    )


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed: nothing to hide")
def test_event_writer_does_not_import_torch(tmp_path):
    code = (
        f"from dlchapter.reporting import events; w = events.open_writer({str(tmp_path)!r}); "
        "w.add_scalar('loss', 1.0, 1); w.close(); import tensorboardX.writer as tw, numpy; "
        "assert tw.numpy_compatible is numpy.ndarray"
    )
    assert _loaded_after(code, ("torch", "tensorboardX")) == ["tensorboardX"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("events.out.tfevents.")]


def test_event_writer_keeps_a_torch_the_caller_imported():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed")
    code = (
        "import torch; from dlchapter.reporting import events; events.import_tensorboardx(); import sys; "
        "assert sys.modules['torch'] is torch"
    )
    assert _loaded_after(code, ("torch",)) == ["torch"]


def test_written_out_choice_names_match_the_registries():
    from dlchapter.concepts import activations
    from dlchapter.configs import config_checks
    from dlchapter.engine import optim, precision

    assert config_checks.OPTIMIZER_NAMES == tuple(optim.OPTIMIZERS)
    assert config_checks.ACTIVATION_NAMES == tuple(sorted(activations.ELEMENTWISE))
    assert config_checks.PRECISION_NAMES == tuple(precision.POLICIES)
    from dlchapter.presets import run_configs

    assert run_configs.DEFAULT_LEARNING_RATES == optim.DEFAULT_LEARNING_RATES


def test_heap_frozen_keeps_earlier_objects_out_of_collections_until_it_ends():
    from dlchapter import cli

    class Node:
        pass

    node = Node()
    node.cycle = node  # garbage only a full collection can free
    alive = weakref.ref(node)
    with cli.heap_frozen():
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: skipped while the run lasts
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None  # given back to the collector: nothing leaks


def test_a_second_frozen_run_collects_the_first_runs_garbage_before_freezing(monkeypatch):
    from dlchapter import cli

    class Node:
        pass

    monkeypatch.setattr(cli, "_FROZEN_BEFORE", False)
    with cli.heap_frozen():
        node = Node()
        node.cycle = node  # the first run's garbage, dropped after it
        alive = weakref.ref(node)
    del node
    gc.disable()  # no automatic collection in between: only heap_frozen's own
    try:
        with cli.heap_frozen():
            assert alive() is None  # collected, not frozen for the second run
    finally:
        gc.enable()


def test_collector_paused_collects_nothing_and_then_runs_again():
    from dlchapter import cli

    with cli.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), cli.collector_paused():
        raise ValueError("an import failed")
    assert gc.isenabled()


def test_an_experiment_runs_with_the_heap_frozen_and_leaves_it_unfrozen(tmp_path, monkeypatch):
    from dlchapter import cli
    from dlchapter.presets import EXPERIMENTS, Experiment, Recipe

    frozen = []
    iris = EXPERIMENTS["iris"].recipe()
    recipe = Recipe(
        iris.config_class,
        iris.presets,
        lambda config, workdir: frozen.append(gc.get_freeze_count() if gc.isenabled() else -1),
        lambda *a: "",
        "records the freeze count",
    )
    monkeypatch.setattr(cli, "EXPERIMENTS", {"iris": Experiment("iris", (), lambda: recipe)})
    monkeypatch.setenv("DLCHAPTER_COMPILATION_CACHE", "0")
    cli.run_experiment("iris", ["--workdir", str(tmp_path / "run")])
    assert frozen and frozen[0] > 0 and "jax" in sys.modules
    assert gc.get_freeze_count() == 0


def test_error_paths_import_no_jax(tmp_path):  # a Ctrl-C inside an import must not import JAX on top of it
    code = (
        "from dlchapter.reporting import tracking\n"
        "try:\n"
        f"    with tracking.track_run({str(tmp_path)!r}):\n"
        "        raise KeyboardInterrupt\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "from dlchapter import cli\n"
        "def fails(argv):\n"
        "    raise OSError('the disk is full')\n"
        "assert cli.launch(fails, []) == 2\n"
    )
    assert _loaded_after(code, ("jax", "jaxlib"), ("dlchapter.checkpoint.resume",)) == []


@pytest.mark.parametrize("name", ["diamonds", "mnist_cnn", "sequences", "optimizers"])
def test_parsing_an_experiments_flags_does_not_import_typeguard(name, tmp_path):
    """tyro checks each flag's default against its type, and imports typeguard (50 ms) for any type that is not
    a plain class: the flags are annotated `object`, so it never has to."""
    code = (
        "from dlchapter.configs.config import parse_config\n"
        "from dlchapter.presets import EXPERIMENTS\n"
        f"recipe = EXPERIMENTS[{name!r}].recipe()\n"
        f"parse_config(recipe.config_class, ['--workdir', {str(tmp_path)!r}], recipe.presets, prog='x')\n"
    )
    assert _loaded_after(code, ("typeguard", "tyro")) == ["tyro"]


def test_the_probe_sees_typeguard_when_tyro_checks_an_any_field():  # the check above can fail
    code = "import typing, tyro._resolver\ntyro._resolver.is_instance(typing.Any, 1)\n"
    assert _loaded_after(code, ("typeguard",)) == ["typeguard"]


def test_a_bad_flag_stops_the_early_helper_at_once(tmp_path, monkeypatch):
    """The helper starts (importing pandas) before the flags are parsed; a flag that cannot work ends the run
    without waiting for that import, and the helper is gone."""
    from dlchapter import cli
    from dlchapter.configs.config_errors import ConfigError
    from dlchapter.reporting import helper_process

    monkeypatch.setenv(helper_process.ENV_SWITCH, "1")
    monkeypatch.setattr(helper_process, "_usable_cpus", lambda: 2)
    stopped = []
    stop = helper_process._Helper.stop
    monkeypatch.setattr(helper_process._Helper, "stop", lambda self: (stopped.append(self.process), stop(self)))
    with pytest.raises((ConfigError, SystemExit)):
        cli.run_experiment("diamonds", ["--workdir", str(tmp_path / "run"), "--epochs", "abc"])
    assert len(stopped) == 1 and stopped[0].poll() is not None
    assert not (tmp_path / "run").exists()
