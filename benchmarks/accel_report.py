"""The Markdown of `benchmarks.accelerator_check`: targets, section times and one table per section.

`markdown(report)` is the whole `.md` file (every numerics test with its
tolerances); `summary(report)` is what the check prints last: the same without
the per-test list, short enough for a terminal's tail. Targets are the issue's
(issue 19): a CNN epoch of 60,000 images in at most 0.25 s after compilation
and at least 5x faster per step than PyTorch eager on the same device; 256
CNNs in one program at least 10x the images per second of one; the chapter's
Fashion-MNIST experiment within 0.005 of the CPU run's accuracy (same seed)
and under 10 s end to end.
"""

from __future__ import annotations

from typing import Any

SMOKE_NOTE = " (smoke size: numbers say nothing about speed)"
TARGET_EPOCH_S = 0.25
TARGET_VS_TORCH = 5.0
TARGET_MANY_SPEEDUP = 10.0
TARGET_ACCURACY_GAP = 0.005
TARGET_EXPERIMENT_S = 10.0
SECTION_TITLES = {
    "environment": "1. Environment",
    "numerics": "2. Numerics on this backend",
    "cnn_epoch": "3. CNN epoch (60,000 images, batch 64)",
    "throughput": "4. Throughput (ms per training step)",
    "torch_eager": "4. PyTorch eager",
    "torch_compile": "4. PyTorch torch.compile",
    "many_models_fp32": "5. Many CNNs at once (fp32)",
    "many_models_bf16": "5. Many CNNs at once (bf16)",
    "experiment": "6. Fashion-MNIST experiment end to end",
}


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


def _result(report: dict[str, Any], name: str) -> Any:
    return (report["sections"].get(name) or {}).get("result")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def targets(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows; a number that was not measured is '-' and 'n/a'."""
    rows = []
    cnn = [r for r in _result(report, "cnn_epoch") or [] if "warm_epoch_s" in r]
    best = min(cnn, key=lambda r: r["warm_epoch_s"]) if cnn else None
    full = best is not None and best["rows"] == 60_000
    epoch = (
        f"{best['warm_epoch_s']:.3f} s ({best['steps_per_call']} steps per call, {best['rows']:,} rows)"
        if best
        else "-"
    )
    rows.append(
        (
            f"CNN epoch of 60,000 images after compilation <= {TARGET_EPOCH_S} s",
            epoch,
            _verdict(best["warm_epoch_s"] <= TARGET_EPOCH_S if full else None),
        )
    )
    torch_cnn = (_result(report, "torch_eager") or {}).get("mnist_cnn", {})
    if best and "step_ms" in torch_cnn:
        ours_ms = best["warm_epoch_s"] * 1e3 / best["steps_per_epoch"]
        ratio = torch_cnn["step_ms"] / ours_ms
        rows.append(
            (
                f"CNN step >= {TARGET_VS_TORCH:g}x faster than PyTorch eager on the same device",
                f"{ratio:.2f}x (ours {ours_ms:.3f} ms, torch {torch_cnn['step_ms']:.3f} ms per step)",
                _verdict(ratio >= TARGET_VS_TORCH if full else None),
            )
        )
    else:
        rows.append(
            (f"CNN step >= {TARGET_VS_TORCH:g}x faster than PyTorch eager", torch_cnn.get("skipped", "-"), "n/a")
        )
    for precision in ("fp32", "bf16"):
        many = [r for r in (_result(report, f"many_models_{precision}") or {}).get("rows", [])]
        top = max(many, key=lambda r: r["n_models"]) if many else None
        measured = f"{top['speedup_vs_one']:.1f}x at N={top['n_models']}" if top and top.get("speedup_vs_one") else "-"
        ok = (
            top["speedup_vs_one"] >= TARGET_MANY_SPEEDUP
            if top and top["n_models"] == 256 and top.get("speedup_vs_one")
            else None
        )
        rows.append(
            (f"256 CNNs at once >= {TARGET_MANY_SPEEDUP:g}x the images/s of one ({precision})", measured, _verdict(ok))
        )
    exp = _result(report, "experiment") or {}
    gap = exp.get("accuracy_minus_cpu")
    rows.append(
        (
            f"Fashion-MNIST accuracy within {TARGET_ACCURACY_GAP} of the CPU run (same seed)",
            f"{exp['test_accuracy']:.4f} vs {exp['cpu_reference']['test_accuracy']} "
            f"({'n/a' if gap is None else f'{gap:+.4f}'})"
            if "test_accuracy" in exp
            else "-",
            _verdict(None if gap is None else abs(gap) <= TARGET_ACCURACY_GAP),
        )
    )
    full_exp = gap is not None
    wall = (
        f"{exp['process_wall_s']:.1f} s process, "
        f"{exp['compile_s'] + exp['train_s']:.1f} s compile + {exp['epochs']} epochs"
        if "process_wall_s" in exp
        else "-"
    )
    rows.append(
        (
            f"Fashion-MNIST experiment under {TARGET_EXPERIMENT_S:g} s end to end",
            wall,
            _verdict(exp["process_wall_s"] < TARGET_EXPERIMENT_S if full_exp else None),
        )
    )
    return rows


def _cell(value: Any) -> str:
    """One table cell: a pipe or a line break in a message would break the row."""
    return _f(value).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(_cell(c) for c in r) + " |" for r in rows),
        "",
    ]


def _environment(env: dict[str, Any]) -> list[str]:
    keys = (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax_checkpoint",
        "chex",
        "numpy",
        "torch",
        "backend",
        "device_kind",
        "device_count",
        "platform_version",
        "default_matmul_precision",
        "memory_limit_gib",
        "memory_note",
        "nvidia_smi",
        "xla_flags",
    )
    rows = [[k, env.get(k)] for k in keys if env.get(k) not in (None, "")]
    machine = env.get("machine", {})
    rows.append(["host", f"{machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}"])
    return _table(["what", "value"], rows)


def _tolerances(checks: list[dict[str, Any]]) -> str:
    parts = []
    for c in checks:
        text = f"{'differ: ' if c['must_differ'] else ''}rtol {_f(c['rtol'])}, atol {_f(c['atol'])}"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) or "exact / none stated"


def _numerics(num: dict[str, Any], full: bool) -> list[str]:
    lines = [
        f"pytest exit {num.get('exit_code')}, {num.get('seconds', 0):.1f} s"
        f"{' (cut short)' if num.get('cut_short') else ''}; outcomes {num.get('counts')}; "
        f"files {', '.join(sorted({s.split('::')[0] for s in num.get('selection', [])}))}"
        + (f"; missing {num['missing_files']}" if num.get("missing_files") else "")
        + ".",
        "",
    ]
    tests = num.get("tests", {})
    bad = {t: r for t, r in tests.items() if r["outcome"] in ("failed", "error")}
    shown = tests if full else bad
    if shown:
        rows = [
            [
                t,
                r["outcome"],
                r.get("seconds"),
                "float64 (x64)" if r.get("x64") else "float32",
                _tolerances(r.get("checks", [])),
                r.get("outcome_at_highest_precision", "-"),
                r.get("message", ""),
            ]
            for t, r in shown.items()
        ]
        lines += _table(
            [
                "test",
                "outcome",
                "s",
                "JAX dtype",
                "stated tolerance (rtol, atol)",
                "at matmul precision highest",
                "message",
            ],
            rows,
        )
    elif not full:
        lines += ["No failures (every test with its tolerances is listed in the .md).", ""]
    return lines


def _cnn(rows: list[dict[str, Any]]) -> list[str]:
    return _table(
        [
            "steps per call",
            "rows",
            "data",
            "compile s",
            "epoch s (each)",
            "warm epoch s",
            "ms per step",
            "final train accuracy",
        ],
        [
            [
                r["steps_per_call"],
                r["rows"],
                r["data"],
                r["compile_s"],
                ", ".join(f"{s:.3f}" for s in r["epoch_s"]),
                r["warm_epoch_s"],
                r["warm_epoch_s"] * 1e3 / r["steps_per_epoch"],
                r["final_accuracy"],
            ]
            for r in rows
        ],
    )


def _throughput(ours: dict[str, Any], eager: dict[str, Any], compiled: dict[str, Any]) -> list[str]:
    rows = []
    for name, row in ours.items():
        v = row["variants"]
        best = min(v, key=lambda k: v[k]["step_ms"]) if v else None
        cells = [
            f"{v[k]['step_ms']:.3g} (compile {v[k]['compile_s']:.1f} s)" if k in v else "-"
            for k in ("step", "fused8", "epoch")
        ]
        peer = [eager.get(name, {}), compiled.get(name, {})]
        ratio = [f"{p['step_ms'] / v[best]['step_ms']:.2f}x" if "step_ms" in p and best else "-" for p in peer]
        rows.append(
            [name, row["batch_size"], *cells, best, *(p.get("step_ms", p.get("skipped", "-")) for p in peer), *ratio]
        )
    head = [
        "model",
        "batch",
        "step",
        "fused8",
        "epoch",
        "best",
        "torch eager",
        "torch.compile",
        "eager / ours",
        "compile / ours",
    ]
    return _table(head, rows) + ["ms per step, median over timed epochs; ratios above 1: ours faster.", ""]


def _many(res: dict[str, Any]) -> list[str]:
    rows = [
        [
            r["n_models"],
            r["images_per_s"],
            r["ms_per_step"],
            r.get("speedup_vs_one"),
            r["compile_s"],
            r["xla_temp_mib"],
            r["device_peak_mib"],
            r["all_finite"],
            r["last_loss_spread"],
        ]
        for r in res.get("rows", [])
    ]
    note = res["rows"][0].get("device_memory_note") if res.get("rows") else None
    return [f"Data: {res.get('data')}." + (f" {note}." if note else ""), ""] + _table(
        [
            "N",
            "images/s",
            "ms per step (all N)",
            "x one model",
            "compile s",
            "XLA temp MiB",
            "device peak MiB (so far)",
            "losses finite",
            "loss spread over models",
        ],
        rows,
    )


def _experiment(exp: dict[str, Any]) -> list[str]:
    if "error" in exp:
        return [f"error: {exp['error']}", ""]
    rows = [
        ["command", f"`{exp['command']}`"],
        ["data", exp["data"]],
        ["test accuracy", exp["test_accuracy"]],
        ["CPU reference", f"{exp['cpu_reference']['test_accuracy']} ({exp['cpu_reference']['source']})"],
        ["process wall s (imports, data, compile, epochs, evaluation, report)", exp["process_wall_s"]],
        ["compile s", exp["compile_s"]],
        ["train s (epochs, no compile)", exp["train_s"]],
        ["epoch s", ", ".join(f"{s:.2f}" for s in exp["epoch_s"])],
        ["steps per call", exp["steps_per_call"]],
    ]
    return _table(["what", "value"], rows)


def markdown(report: dict[str, Any], full: bool = True) -> str:
    """The report as Markdown; `full=False` leaves out the per-test numerics list (failures still shown)."""
    env = _result(report, "environment") or {}
    lines = [
        f"# Accelerator check on {env.get('device_kind', 'an unknown device')} ({env.get('backend', '?')})",
        "",
        (
            f"{report['date']}; `{report['command']}`; data: {report['data']}; total {report.get('total_s', 0):.0f} s "
            f"of a {report['budget_s']:.0f} s budget{SMOKE_NOTE if report['smoke'] else ''}."
        ),
        "",
        "## Targets (issue 19)",
        "",
        *_table(["target", "measured", "verdict"], [list(r) for r in targets(report)]),
        "## Sections",
        "",
        *_table(
            ["section", "status", "seconds", "budget s"],
            [
                [n, s["status"] + (f": {s['reason']}" if s.get("reason") else ""), s["seconds"], s.get("budget_s")]
                for n, s in report["sections"].items()
            ],
        ),
    ]
    renderers = {
        "environment": lambda r: _environment(r),
        "numerics": lambda r: _numerics(r, full),
        "cnn_epoch": _cnn,
        "many_models_fp32": _many,
        "many_models_bf16": _many,
        "experiment": _experiment,
    }
    for name in (
        "environment",
        "numerics",
        "cnn_epoch",
        "throughput",
        "many_models_fp32",
        "many_models_bf16",
        "experiment",
    ):
        result = _result(report, name)
        if name == "throughput":
            eager, compiled = _result(report, "torch_eager") or {}, _result(report, "torch_compile") or {}
            if result or eager or compiled:
                lines += [f"## {SECTION_TITLES[name]}", "", *_throughput(result or {}, eager, compiled)]
            continue
        if result:
            lines += [f"## {SECTION_TITLES[name]}", "", *renderers[name](result)]
    return "\n".join(lines) + "\n"


def summary(report: dict[str, Any]) -> str:
    """What the check prints: `markdown` without the per-test list."""
    return markdown(report, full=False)
