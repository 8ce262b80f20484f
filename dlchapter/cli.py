"""The `dlchapter` command: list and run the chapter's experiments.

    dlchapter list
    dlchapter run iris --workdir runs/iris [--seed 3] [--config improved]
    dlchapter run iris --help                 # that experiment's flags, grouped, with defaults and choices
    dlchapter run all --workdir runs [--quick]
    dlchapter compare runs/a runs/b 'runs/seed*' [--output compare.md] [--curve val_loss]
    dlchapter sweep --workdir runs/sweep [--config pima_kfold] [--learning-rates 1e-3,3e-3 ...]

Exit status: 0 done; 1 a bug (with its traceback); 2 a user error (one `error:`
line: a bad flag or value, bad data, an unusable checkpoint, a diverged loss,
a disk or permission problem, a missing package); 3 interrupted after saving a
checkpoint (run the same command again to resume); 130 Ctrl-C, 143 SIGTERM anywhere else. `--debug` adds the
traceback to a user error. Each command imports what it needs when it needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from dlchapter.checkpoint.checkpoint_errors import TrainingInterrupted
from dlchapter.configs.config import ConfigError
from dlchapter.presets import EXPERIMENTS, Experiment  # noqa: F401  (Experiment: for callers that build registries)
from dlchapter.presets.recipe import Recipe
from dlchapter.process_exit import exit_process  # also for the launchers in experiments/
from dlchapter.reporting.run_guard import (  # noqa: F401  (the exit statuses: for callers and tests)
    EXIT_CTRL_C,
    EXIT_SIGTERM,
    Terminated,
    ctrl_c_noticed,
    guarded_run,
    interruption,
    interrupts_deferred,
    sigterm_unwinds,
)

EXIT_OK, EXIT_BUG, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3


def run_experiment(name: str, argv: Sequence[str] | None = None) -> Any:
    """Parse `argv` for experiment `name`, check it, run it, print its headline; return what the run returned.

    Raises ConfigError before anything loads when a flag, value or directory cannot work.
    """
    from dlchapter.reporting.helper_process import helper_process, import_in_helper

    recipe = EXPERIMENTS[name].recipe()
    with helper_process():  # data parsing and figures beside the JAX process; DLCHAPTER_HELPER_PROCESS=0: off
        import_in_helper(recipe.prefetch_imports)  # e.g. pandas, loaded there while the flags are parsed here
        return _run_in_helper_context(name, recipe, argv)


def _run_in_helper_context(name: str, recipe: Recipe, argv: Sequence[str] | None) -> Any:
    """`run_experiment`'s work inside the helper's context: parse, check, import JAX, run, print the headline."""
    from dlchapter.configs import directory_checks
    from dlchapter.engine.compilation_cache import enable_compilation_cache
    from dlchapter.reporting.run_guard import is_secondary_process
    from dlchapter.reporting.workdir_lock import exclusive_workdir

    with heap_frozen():
        # A Ctrl-C is held until JAX is imported: one inside the initialisation of numpy's or jaxlib's C extensions
        # (imported by the checks too) crashed the process or ended it in an ImportError traceback.
        with interrupts_deferred():
            config, command = _checked_config(name, recipe, argv)
            if recipe.prefetch is not None:
                recipe.prefetch(config)  # the data set loads in the helper while this process imports JAX
            with collector_paused():  # importing JAX makes ~1M objects that live as long as the process
                enable_compilation_cache()  # in the user cache dir; DLCHAPTER_COMPILATION_CACHE=0: off
                import jax  # noqa: F401  (every run trains: imported here also when the cache is off)

                gc.freeze()  # frozen too, before the collector runs again: its first young collection walked them
        with contextlib.nullcontext() if is_secondary_process() else exclusive_workdir(command.workdir):
            result = recipe.run(config, command.workdir)
            directory_checks.drop_replaced_checkpoints(config, command.workdir)  # --restart without checkpoints: now
    from dlchapter.reporting.helper_process import wait_for_figures

    wait_for_figures()  # before the headline, as when leaving the helper's context
    print(recipe.headline(config, command, result))
    return result


def _checked_config(name: str, recipe: Recipe, argv: Sequence[str] | None) -> tuple[Any, Any]:
    """The experiment's config and command line from `argv`, checked (ConfigError); the run's start time marked."""
    from dlchapter.configs import directory_checks
    from dlchapter.reporting import provenance

    config, command = _parsed_config(name, recipe, argv)
    directory_checks.check_workdir(command.workdir)
    directory_checks.check_run_directory(config, command.workdir)
    preset = recipe.presets.get(command.config)
    if getattr(config, "note", "") and getattr(preset, "dataset", None) not in (None, getattr(config, "dataset", None)):
        config = dataclasses.replace(
            config,
            note=(  # the preset's notes describe its own data set, not this one
                f"The {name} experiment's {command.config} preset was written for {preset.dataset}; this run uses "
                f"--dataset {config.dataset}, so the preset's notes on that data set do not apply here."
            ),
        )
    provenance.mark_start()
    return config, command


def _parsed_config(name: str, recipe: Recipe, argv: Sequence[str] | None) -> tuple[Any, Any]:
    """The experiment's config and command line from `argv`, its values checked (ConfigError); no file touched."""
    from dlchapter.configs import config_checks
    from dlchapter.configs.config import parse_config

    config, command = parse_config(
        recipe.config_class, argv, recipe.presets, description=recipe.description, prog=f"dlchapter run {name}"
    )
    config_checks.validate(config)
    return config, command


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection inside the block (`gc.disable`, then `gc.enable`): for imports, whose objects all stay
    alive, so collecting during them finds nothing. JAX's import ran two full collections (0.09 s) otherwise."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """Keep the objects alive on entry (the imported modules: JAX's are about a million) out of the garbage
    collector's full collections until exit (`gc.freeze`, then `gc.unfreeze`, which makes them collectable again).

    A run's start allocates fast, so Python runs several full collections, and each walks every module object:
    0.14-0.27 s of the diamonds experiment's ~1.9 s second run; 0.07 s with `collector_paused` around JAX's import
    and the heap frozen after it (`gc.callbacks` timings, benchmarks/NOTES.md "fourth session"); `run_experiment`
    also freezes JAX's objects at the end of that import, before the first young collection (17 ms) would walk
    them. Young objects are collected as before. From the second use in a process on (`dlchapter run all`), a full
    collection comes first, so the last run's garbage is not frozen with the modules (without it `run all --quick`
    peaked 14% higher).
    """
    global _FROZEN_BEFORE
    if _FROZEN_BEFORE:
        gc.collect()
    _FROZEN_BEFORE = True
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


_FROZEN_BEFORE = False  # whether this process has run with a frozen heap before: its garbage is collected first


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _user_error(error: BaseException) -> str | None:
    """The `error:` line for an ordinary user error; None for a bug."""
    if isinstance(error, ImportError):
        package = (error.name or "").split(".")[0]
        if not package or package == "dlchapter":
            return None
        return f"the package {package} is needed here but is not installed: pip install {package} ({_one_line(error)})"
    if isinstance(error, (ConfigError, OSError)):
        return _one_line(error)
    from dlchapter.reporting.verbosity import VerbosityError
    from dlchapter.reporting.workdir_lock import WorkdirBusy, WorkdirUnusable

    if isinstance(error, (WorkdirBusy, WorkdirUnusable, VerbosityError)):
        return _one_line(error)
    from dlchapter.checkpoint.checkpoint_errors import CheckpointError
    from dlchapter.data.sources import DataError
    from dlchapter.engine.compilation_cache import CompilationCacheError

    if isinstance(error, (DataError, CheckpointError, CompilationCacheError)):
        return _one_line(error)
    train = sys.modules.get(
        "dlchapter.engine.train"
    )  # not imported: the error cannot be its TrainingDiverged (no JAX import)
    if train is not None and isinstance(error, train.TrainingDiverged):
        return _one_line(error)
    return None


def launch(
    main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None, *, verbosity: str | None = None
) -> int:
    """Run an experiment's main(): exit status 0, or an actionable message on stderr and non-zero.

    3: interrupted by SIGTERM/SIGINT after saving a checkpoint (run again to resume);
    130: Ctrl-C anywhere else, 143: SIGTERM anywhere else (one line says so; `--debug` adds the traceback);
    2: a user error (config, data, checkpoint, diverged loss, disk, missing package,
    a busy or unusable work directory), one `error:` line;
    a bug propagates with its traceback. `--debug` anywhere in argv shows the traceback of user errors too.
    `--verbosity quiet|epoch|bar` (anywhere in argv, or `verbosity`) sets what stderr shows;
    the run's TensorBoard events go to WORKDIR/tb/.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [token for token in argv if token != "--debug"]
    try:
        from dlchapter.reporting.verbosity import cli_run  # logging handlers and the run's TensorBoard scope

        with sigterm_unwinds(), ctrl_c_noticed() as ctrl_c, cli_run(argv, verbosity) as argv, guarded_run(argv):
            main(argv)  # guarded_run: the work directory's lock
        if ctrl_c:  # a Ctrl-C whose KeyboardInterrupt a library swallowed: the run did not stop, but it was asked to
            raise KeyboardInterrupt
    except (KeyboardInterrupt, Terminated) as stop:  # outside a checkpointing run's training (that one exits 3)
        if debug:
            traceback.print_exc()
        name, status = interruption(stop)
        print(
            f"interrupted ({name}) before the run finished: its work directory may hold only part of the report; "
            "run the command again (a run with --checkpoint-every-epochs N resumes from its last checkpoint)",
            file=sys.stderr,
        )
        return status
    except Exception as error:
        if isinstance(error, TrainingInterrupted):
            print(error, file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(error, BrokenPipeError):  # `dlchapter list | head`: the reader left; not an error of ours
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
            return EXIT_OK
        message = _user_error(error)
        if message is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_OK


def _data_available(name: str) -> str | None:
    """None when every data set the experiment needs loads offline, else the reason."""
    from dlchapter.data import DataError, load

    for dataset in EXPERIMENTS[name].datasets:
        try:
            load(dataset, download=False)
        except DataError as error:
            return str(error).splitlines()[0]
    return None


def _list() -> int:
    width = max(map(len, EXPERIMENTS))
    for name, experiment in EXPERIMENTS.items():
        print(f"{name:<{width}}  {experiment.summary}")
    return EXIT_OK


def _run_all(workdir: Path, extra: Sequence[str], quick: bool = False) -> int:
    """Every experiment into `workdir/<name>` (a smoke size with `quick`); `workdir/index.md` lists the outcomes."""
    import functools

    from dlchapter.reporting import run_all as run_all_lib
    from dlchapter.reporting.report import _atomic_write
    from dlchapter.reporting.tracking import current_scope

    def reason_to_skip(name: str) -> str | None:
        needs = EXPERIMENTS[name].needs
        return f"needs {needs}" if needs else _data_available(name)

    _check_flags_of_all([name for name in EXPERIMENTS if reason_to_skip(name) is None], extra, quick)
    scope = current_scope()
    mains = {name: functools.partial(run_experiment, name) for name in EXPERIMENTS}
    status, _ = run_all_lib.run_all(
        mains,
        workdir,
        extra,
        quick=quick,
        data_missing=reason_to_skip,
        progress=scope.progress if scope is not None else None,
        write=_atomic_write,
    )
    print(f"index: {workdir / 'index.md'}")
    return status


def _check_flags_of_all(names: Sequence[str], extra: Sequence[str], quick: bool) -> None:
    """ConfigError, before anything runs or is written, when one of the experiments `names` cannot take the flags
    `extra` (after its `--quick` sizes): `run all` passes them to every experiment."""
    from dlchapter.reporting.run_all import QUICK_FLAGS

    refused: dict[str, list[str]] = {}
    for name in names:
        flags = ["--workdir", "unused", *(QUICK_FLAGS.get(name, ()) if quick else ()), *extra]
        try:
            _parsed_config(name, EXPERIMENTS[name].recipe(), flags)
        except ConfigError as error:
            refused.setdefault(str(error), []).append(name)
    if refused:
        reasons = "; ".join(f"{', '.join(who)}: {why}" for why, who in refused.items())
        raise ConfigError(
            f"run all: {reasons} (the flags after `run all` go to every experiment; run the others one by one "
            "with `dlchapter run NAME`)"
        )


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one ConfigError line (printed by `launch`), not usage and exit."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def _router() -> _Parser:
    parser = _Parser(
        prog="dlchapter",
        description="The deep-learning chapter in JAX/Flax.",
        epilog=__doc__[__doc__.index("Exit status:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="name every experiment")
    commands.add_parser(
        "sweep",
        help="many models in one program: a hyperparameter grid or random sample x seeds (x folds)",
        add_help=False,
    )
    run = commands.add_parser(
        "run", help="run one experiment (or all); `dlchapter run NAME --help` lists its flags", add_help=False
    )
    run.add_argument("name", nargs="?", choices=[*EXPERIMENTS, "all"])
    commands.add_parser(
        "compare", help="a Markdown table and a validation-curve figure of several run directories", add_help=False
    )
    return parser


def _dispatch(argv: Sequence[str]) -> int:
    args, extra = _router().parse_known_args(argv)
    if args.command == "list":
        return _list()
    if args.command == "sweep":
        from dlchapter.presets.sweep_california import sweep_command  # imports JAX only once a sweep starts

        status = sweep_command(extra)
        if status == EXIT_OK:
            print("compare sweeps and runs: dlchapter compare DIR [DIR ...]", file=sys.stderr)
        return status
    if args.command == "compare":
        from dlchapter.reporting.compare import compare_command

        return compare_command(extra)
    if args.name in (None, "all") and ("-h" in extra or "--help" in extra):
        print(
            "usage: dlchapter run NAME --workdir DIR [flags]   (`dlchapter run NAME --help` lists NAME's flags)\n"
            "       dlchapter run all --workdir DIR [--quick] [flags, given to every experiment: each must take them]\n"
        )
        return _list()
    if args.name not in (None, "all") and "--quick" in extra:
        raise ConfigError("--quick applies to `dlchapter run all` only; give the experiment's own size flags")
    if args.name is None:
        raise ConfigError(f"dlchapter run: name an experiment: {', '.join([*EXPERIMENTS, 'all'])}")
    if args.name == "all":
        workdir = _Parser(prog="dlchapter run all", add_help=False)
        workdir.add_argument("--workdir", required=True)
        workdir.add_argument("--quick", action="store_true")
        known, rest = workdir.parse_known_args(extra)
        from dlchapter.configs.directory_checks import check_workdir

        check_workdir(known.workdir)
        return _run_all(Path(known.workdir), rest, known.quick)
    run_experiment(args.name, extra)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dlchapter` command; returns the exit status."""
    status = [EXIT_OK]

    def dispatch(tokens: Sequence[str] | None) -> None:
        status[0] = _dispatch(list(tokens or ()))

    failed = launch(dispatch, argv)
    return failed or status[0]


def console_main() -> NoReturn:
    """The `dlchapter` console script: `main()`, then `exit_process` with its status."""
    exit_process(main())


if __name__ == "__main__":
    console_main()
