"""`dlchapter compare`: the table's groups, mean and spread checked against the runs' metrics.json; bad inputs."""

import json
import re
import statistics

import pytest

from dlchapter import cli
from experiments import iris

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Two seeds of the chapter's iris config and one run with another learning rate."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--epochs", "3", "--monitor", "none", "--validation-split", "0.2"]
    iris.main(["--workdir", str(root / "adam_seed0"), "--seed", "0", *common])
    iris.main(["--workdir", str(root / "adam_seed1"), "--seed", "1", *common])
    iris.main(["--workdir", str(root / "fast_seed0"), "--seed", "0", "--learning-rate", "0.05", *common])
    return root


def _metrics(path):
    return json.loads((path / "metrics.json").read_text())


def test_compare_groups_seeds_and_reports_mean_and_spread(three_runs, tmp_path, capsys):
    out = tmp_path / "report" / "compare.md"
    out.parent.mkdir()  # --output's directory must exist (test_compare_stops_with_one_error_line)
    status = cli.main(["compare", str(three_runs / "adam_seed*"), str(three_runs / "fast_seed0"), "--output", str(out)])
    assert status == 0
    text = out.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| runs"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:3] == ["runs", "learning_rate", "seeds"]  # the one config field that differs; seed is the repeat
    assert {"test_accuracy", "test_loss"} <= set(columns)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| [")]
    assert len(rows) == 2
    seeds_row, single_row = rows
    assert "adam_seed0" in seeds_row[0] and "adam_seed1" in seeds_row[0] and seeds_row[2] == "0, 1"
    assert seeds_row[1] == "None" and single_row[1] == "0.05"
    for metric in ("test_accuracy", "test_loss"):
        values = [_metrics(three_runs / d)[metric] for d in ("adam_seed0", "adam_seed1")]
        mean, std, n = re.fullmatch(r"(\S+) ± (\S+) \(n=(\d)\)", seeds_row[columns.index(metric)]).groups()
        assert float(mean) == pytest.approx(statistics.mean(values), rel=1e-3)
        assert float(std) == pytest.approx(statistics.stdev(values), rel=1e-2, abs=1e-12)
        assert n == "2"
        assert float(single_row[columns.index(metric)]) == pytest.approx(
            _metrics(three_runs / "fast_seed0")[metric], rel=1e-3
        )
    assert (
        statistics.stdev([_metrics(three_runs / d)["test_loss"] for d in ("adam_seed0", "adam_seed1")]) > 0
    )  # seeds differ
    figure = out.with_suffix(".png").read_bytes()
    assert figure.startswith(PNG_SIGNATURE) and len(figure) > 5_000
    assert "![val_loss per epoch](compare.png)" in text
    assert "(../" in text  # runs linked relative to the table
    assert "learning_rate" in capsys.readouterr().out


CASES = ["not_a_run", "empty_glob", "missing_dir", "bad_json", "bad_output"]
CASES += ["no_such_curve", "output_dir", "output_file"]


@pytest.mark.parametrize("case", CASES)
def test_compare_stops_with_one_error_line(three_runs, tmp_path, capsys, case):
    (tmp_path / "not_a_run").mkdir()
    broken = tmp_path / "bad_json"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "metrics.json").write_text("{not json")
    out = tmp_path / "compare.md"
    argv = {
        "not_a_run": [str(tmp_path / "not_a_run")],
        "empty_glob": [str(tmp_path / "nothing_*")],
        "missing_dir": [str(tmp_path / "absent")],
        "bad_json": [str(broken)],
        "bad_output": [str(three_runs / "adam_seed0")],
        "no_such_curve": [str(three_runs / "adam_seed0"), "--curve", "nosuch"],
        "output_dir": [str(three_runs / "adam_seed0")],
        "output_file": [str(three_runs / "adam_seed0")],
    }[case]
    (tmp_path / "a_file").write_text("x")
    output = {
        "bad_output": str(tmp_path / "compare.txt"),
        "output_dir": str(tmp_path / "absent" / "compare.md"),
        "output_file": str(tmp_path / "a_file" / "compare.md"),
    }.get(case, str(out))
    before = {p: p.read_bytes() for p in (three_runs / "adam_seed0").iterdir() if p.is_file()}
    assert cli.main(["compare", *argv, "--output", output]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    if case == "no_such_curve":  # names the flag and the curves the runs have
        assert "--curve 'nosuch'" in err[0] and "val_loss" in err[0] and "loss" in err[0], err
    if case in ("output_dir", "output_file"):  # names the flag and what to do, no raw OSError
        assert f"--output {output}" in err[0] and "Errno" not in err[0] and ".tmp" not in err[0], err
        assert ("mkdir -p" in err[0]) if case == "output_dir" else ("is a file" in err[0]), err
        assert not (tmp_path / "absent").exists() and (tmp_path / "a_file").read_text() == "x"
    assert not out.exists() and not (tmp_path / "compare.png").exists() and not (tmp_path / "compare.txt").exists()
    assert {p: p.read_bytes() for p in (three_runs / "adam_seed0").iterdir() if p.is_file()} == before
