"""The numerics that must not change with the backend: the model tests through pytest, with their tolerances.

    python -m benchmarks.numerics_check [--smoke] [--out DIR]

Runs the tests that check our numbers against independent references (the
recurrent cells against the chapter's equations in numpy float64, the CNN and
its convolutions against float64 references, losses and metrics against
scikit-learn) in a pytest subprocess on whatever backend JAX finds, and
reads each test's outcome from pytest's `-rA` summary lines (so a run cut
short still reports what finished) and, when pytest ends, its JUnit XML.
Each test's stated tolerances are read from the test source (`ast`): the
`rtol`/`atol` of every `assert_allclose`, `assert_trees_all_close`,
`allclose`, `isclose` or `pytest.approx` call in the test function (0, 0 for the
exact `assert_trees_all_equal`, `assert_array_equal`), and whether it runs in
JAX's float64 (`enable_x64`; the others run our float32 code against float64
references). Tests that fail are rerun once with
`JAX_DEFAULT_MATMUL_PRECISION=highest`: a test that then passes failed on the
backend's reduced-precision float32 matrix units (TF32 on NVIDIA GPUs).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NUMERIC_TESTS = (
    "tests/models/test_recurrent.py",
    "tests/models/test_conv.py",
    "tests/models/test_conv_ops.py",
    "tests/test_losses_metrics.py",
)
SMOKE_TESTS = (
    "tests/test_losses_metrics.py::test_streamed_regression_metrics_over_padded_batches_match_sklearn",
    "tests/models/test_conv.py::test_first_conv_matches_scipy_cross_correlation",
)
CLOSE_CALLS = {
    "assert_allclose": (1e-7, 0.0),
    "assert_trees_all_close": (1e-6, 1e-6),
    "allclose": (1e-5, 1e-8),
    "isclose": (1e-5, 1e-8),
    "approx": (1e-6, 1e-12),
    "assert_trees_all_equal": (0.0, 0.0),
    "assert_array_equal": (0.0, 0.0),
    "array_equal": (0.0, 0.0),
    "assert_array_almost_equal": (None, 1.5e-6),
}
"""Comparison calls and their library defaults (rtol, atol): numpy.testing, chex, numpy, pytest.approx (rel, abs)."""
_SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+?)(?: - (.*))?$")


def _number(node: ast.AST | None) -> float | None:
    try:
        return float(ast.literal_eval(node)) if node is not None else None
    except (ValueError, TypeError, SyntaxError):
        return None


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def tolerances(path: Path) -> dict[str, dict[str, Any]]:
    """{test function: {"checks": [{"call", "rtol", "atol", "line", "must_differ"}], "x64": bool}} of one file."""
    tree = ast.parse(path.read_text())
    negated = {id(n.operand) for n in ast.walk(tree) if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)}
    found: dict[str, dict[str, Any]] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not fn.name.startswith("test"):
            continue
        checks = []
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            name = _call_name(call)
            if name not in CLOSE_CALLS:
                continue
            kwargs = {k.arg: k.value for k in call.keywords}
            rtol, atol = CLOSE_CALLS[name]
            checks.append(
                {
                    "call": name,
                    "line": call.lineno,
                    "must_differ": id(call) in negated,
                    "rtol": _number(kwargs.get("rtol", kwargs.get("rel"))) if {"rtol", "rel"} & set(kwargs) else rtol,
                    "atol": _number(kwargs.get("atol", kwargs.get("abs"))) if {"atol", "abs"} & set(kwargs) else atol,
                }
            )
        checks.sort(key=lambda c: c["line"])
        found[fn.name] = {"checks": checks, "x64": "enable_x64" in ast.unparse(fn)}
    return found


def _function_of(test_id: str, functions: Sequence[str]) -> str | None:
    """The test function a pytest id comes from (parameters, chex variants and absl suffixes removed)."""
    name = test_id.split("::")[-1].split("[")[0]
    name = re.sub(r"__(with|without)_\w+$", "", name)
    matches = [f for f in functions if name == f or name.startswith(f + "_")]
    return max(matches, key=len) if matches else None


def parse_summary(text: str) -> dict[str, dict[str, Any]]:
    """{test id: {"outcome", "message"}} from pytest's `-rA` short summary lines."""
    results = {}
    for line in text.splitlines():
        match = _SUMMARY.match(line.strip())
        if match and "::" in match.group(2):
            results[match.group(2)] = {"outcome": match.group(1).lower(), "message": (match.group(3) or "")[:300]}
    return results


def junit_times(path: Path) -> dict[str, float]:
    """{test id: seconds} from a JUnit XML file (empty if pytest did not get to write it)."""
    if not path.is_file():
        return {}
    times = {}
    for case in ET.parse(path).iter("testcase"):
        parts = case.get("classname", "").split(".")
        module_parts = [p for p in parts if not p[:1].isupper()]
        classes = [p for p in parts if p[:1].isupper()]
        test_id = "/".join(module_parts) + ".py::" + "::".join([*classes, case.get("name", "")])
        times[test_id] = float(case.get("time", 0.0))
    return times


def run_pytest(
    selection: Sequence[str], log: Path, junit: Path, timeout: float, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run pytest on `selection` (quiet, `-rA`), its output into `log`; outcomes per test id and the wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    argv = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}", *selection]
    started = time.perf_counter()
    with log.open("w") as out:
        try:
            proc = subprocess.run(
                argv, check=False, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.perf_counter() - started
    results = parse_summary(log.read_text(errors="replace"))
    for test_id, secs in junit_times(junit).items():
        if test_id in results:
            results[test_id]["seconds"] = secs
    return {"exit_code": code, "cut_short": code is None, "seconds": seconds, "tests": results}


def check(smoke: bool, out_dir: Path, timeout: float) -> dict[str, Any]:
    """The numerics section: every test's outcome and tolerances; failures rerun at `highest` matmul precision."""
    selection = list(SMOKE_TESTS if smoke else NUMERIC_TESTS)
    files = sorted({s.split("::")[0] for s in selection})
    missing = [f for f in files if not (ROOT / f).is_file()]
    selection = [s for s in selection if s.split("::")[0] not in missing]
    tol = {f: tolerances(ROOT / f) for f in files if f not in missing}
    deadline = time.monotonic() + timeout
    run = run_pytest(selection, out_dir / "numerics-pytest.log", out_dir / "numerics-junit.xml", timeout)
    for test_id, result in run["tests"].items():
        path = test_id.split("::")[0]
        function = _function_of(test_id, list(tol.get(path, {})))
        info = tol.get(path, {}).get(function, {"checks": [], "x64": False})
        result.update(function=function, checks=info["checks"], x64=info["x64"])
    failed = [t for t, r in run["tests"].items() if r["outcome"] in ("failed", "error")]
    if failed and deadline - time.monotonic() > 10:
        rerun = run_pytest(
            failed,
            out_dir / "numerics-highest.log",
            out_dir / "numerics-highest.xml",
            deadline - time.monotonic(),
            {"JAX_DEFAULT_MATMUL_PRECISION": "highest"},
        )
        for test_id, result in rerun["tests"].items():
            if test_id in run["tests"]:
                run["tests"][test_id]["outcome_at_highest_precision"] = result["outcome"]
        (out_dir / "numerics-highest.xml").unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for result in run["tests"].values():
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    return {**run, "selection": selection, "missing_files": missing, "counts": counts}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    result = check(args.smoke, args.out, args.timeout)
    print(json.dumps(result["counts"]))
    return result


if __name__ == "__main__":
    main()
