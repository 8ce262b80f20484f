"""`dlchapter run all`: runs what has data, skips the rest with the reason, reports failures, writes an index."""

import types

from dlchapter import cli
from experiments import diamonds, iris


def _failing_module() -> types.ModuleType:
    module = types.ModuleType("broken_experiment")
    module.DATASETS = ()

    def main(argv):
        raise RuntimeError("this experiment is broken on purpose")

    module.main = main
    return module


def test_run_all_writes_an_index_of_runs_skips_and_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLCHAPTER_DATA_DIR", str(tmp_path / "empty"))  # no files: only iris (bundled with scikit-learn) has data
    monkeypatch.setenv("DLCHAPTER_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "EXPERIMENTS", {
        "iris": cli.Experiment(iris, "iris"),
        "diamonds": cli.Experiment(diamonds, "diamonds"),
        "broken": cli.Experiment(_failing_module(), "broken"),
    })
    status = cli.main(["run", "all", "--workdir", str(tmp_path / "runs"), "--epochs", "3"])
    assert status == 1  # one experiment failed; the others still ran and were indexed
    index = (tmp_path / "runs" / "index.md").read_text()
    assert "| iris | [summary](iris/summary.md) |" in index
    assert (tmp_path / "runs" / "iris" / "summary.md").is_file()
    assert "| diamonds | skipped: " in index and "diamonds" in capsys.readouterr().err
    assert "| broken | failed: RuntimeError: this experiment is broken on purpose |" in index
    assert not (tmp_path / "runs" / "diamonds").exists()
