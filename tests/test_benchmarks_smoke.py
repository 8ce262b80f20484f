"""Smoke size of benchmarks/throughput.py: it runs, through the library's train program, and writes its results.

The full benchmark (peers included) is a documented command, never run here.
"""

import json

import pytest

from benchmarks import throughput
from benchmarks.specs import SPECS, smoke

MODELS = ("diamonds_mlp", "mnist_cnn")
VARIANTS = ("step", "epoch")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    report = throughput.main(
        [
            "--smoke",
            "--in-process",
            "--peers",
            "none",
            "--models",
            ",".join(MODELS),
            "--variants",
            ",".join(VARIANTS),
            "--blocks",
            "2",
            "--warmup",
            "0",
            "--out-dir",
            str(out),
            "--name",
            "smoke",
        ]
    )
    return report, out


def test_smoke_writes_json_and_markdown_with_the_expected_fields(smoke_run):
    report, out = smoke_run
    saved = json.loads((out / "smoke.json").read_text())
    assert saved["smoke"] is True
    assert set(saved["versions"]) >= {"jax", "jaxlib", "flax", "backend", "device_kind"}
    assert set(saved["load_avg"]) >= {"start", "end", "max"}
    assert list(saved["models"]) == list(MODELS)
    for name in MODELS:
        ours = saved["models"][name]["ours"]
        assert ours["framework"] == "ours" and ours["peak_rss_mib"] > 0
        assert list(ours["variants"]) == list(VARIANTS)
        for variant, result in ours["variants"].items():
            for field in (
                "lower_s",
                "compile_s",
                "first_call_s",
                "step_ms",
                "samples_per_s",
                "eval_samples_per_s",
                "xla_temp_mib",
            ):
                assert result[field] > 0, (name, variant, field)
            assert len(result["step_ms_blocks"]) == 2
            assert result["traces"]["train"] == 1  # one compile per program, whatever the number of calls
        assert saved["models"][name]["peers"] == {}
    md = (out / "smoke.md").read_text()
    assert "## Training step" in md and "## Our training-loop variants" in md and "## Compile, evaluation, memory" in md
    for name in MODELS:
        assert f"| {name} |" in md
        best = throughput.best_variant(saved["models"][name]["ours"])
        assert best in VARIANTS
        assert f"({best}) |" in md  # the headline row names the variant it shows
    assert "jaxlib" in md and "load average" in md
    assert "+patch" not in md


def test_smoke_epoch_variant_fuses_the_whole_smoke_epoch(smoke_run):
    report, _ = smoke_run
    for name in MODELS:
        variants = report["models"][name]["ours"]["variants"]
        assert variants["step"]["steps_fused"] == 1
        assert variants["epoch"]["steps_fused"] == smoke(SPECS[name]).steps_per_epoch > 1


def test_best_variant_and_ratio_helpers():
    ours = {"variants": {"step": {"step_ms": 2.0}, "fused8": {"step_ms": 0.5}, "epoch": {"step_ms": 1.0}}}
    assert throughput.best_variant(ours) == "fused8"
    assert throughput.best_variant({"variants": {}}) is None
    assert throughput.best_variant({"error": "exit 1"}) is None
    assert throughput._ratio(1.0, {"step_ms": 4.0}) == "0.25"
    assert throughput._ratio(1.0, {"skipped": "not installed"}) == "-"


def test_paired_ratios_pair_rounds_by_index_and_skip_failed_rounds():
    ours = throughput._median_run([{"step_ms": 1.0}, {"step_ms": 2.0}, {"error": "exit 1"}, {"step_ms": 1.2}])
    assert ours["step_ms"] == 1.2 and ours["step_ms_rounds"] == [1.0, 2.0, None, 1.2]
    peer = throughput._median_run([{"step_ms": 2.0}, {"error": "timeout"}, {"step_ms": 3.0}, {"step_ms": 4.0}])
    # round 1: peer failed, round 2: ours failed; rounds 0 and 3 pair up
    assert throughput.paired_ratios(ours, peer) == [0.5, 0.3]
    report = {
        "models": {
            "m": {"ours": {"variants": {"epoch": ours}}, "peers": {"torch": peer, "keras_jax": {"skipped": "no"}}}
        }
    }
    lines = throughput._paired_lines(report, ["keras_jax", "torch"])
    assert "| m | - | 0.4 [0.3-0.5] |" in lines
    one_round = {
        "models": {
            "m": {
                "ours": {"variants": {"epoch": {"step_ms": 1.0, "step_ms_rounds": [1.0]}}},
                "peers": {"torch": {"step_ms": 2.0, "step_ms_rounds": [2.0]}},
            }
        }
    }
    assert throughput._paired_lines(one_round, ["torch"]) == []  # one round: nothing to pair over


def test_variants_are_the_library_loops_only():
    assert throughput.parse(["--peers", "none"]).variants == list(throughput.VARIANTS)
    with pytest.raises(SystemExit):  # the "+patch" variants are gone: the patch is the library now
        throughput.parse(["--variants", "step+patch"])


def test_cnn_epoch_times_compilation_and_each_epoch_separately(tmp_path):
    from benchmarks import cnn_epoch

    result = cnn_epoch.main(["--rows", "256", "--epochs", "2", "--synthetic", "--out-dir", str(tmp_path)])
    saved = json.loads(next(tmp_path.glob("cnn_epoch-*.json")).read_text())
    assert saved == json.loads(json.dumps(result))  # what main returned is what it wrote
    assert saved["data"] == "synthetic" and saved["steps_per_epoch"] == 4
    assert saved["compile_s"] > 0 and len(saved["epoch_s"]) == 2 and all(s > 0 for s in saved["epoch_s"])
    assert saved["warm_epoch_s"] == saved["epoch_s"][1]
    assert 0.0 <= saved["final_accuracy"] <= 1.0


def test_paired_smoke_times_every_contender_each_round(tmp_path):
    """benchmarks/paired.py at smoke size, without peers: the fused LSTM op against the per-step cell."""
    from benchmarks import paired

    out = tmp_path / "paired.json"
    report = paired.main(
        [
            "--smoke",
            "--models",
            "lstm",
            "--contenders",
            "ours,ours-generic,ours-prev,ours-fused",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    lstm = saved["models"]["lstm"]
    assert saved == json.loads(json.dumps(report))
    for name in ("ours", "ours-generic", "ours-prev", "ours-fused"):
        assert len(lstm["ms_per_step"][name]) == 2 and all(ms > 0 for ms in lstm["ms_per_step"][name])
        assert len(lstm["cpu_ms_per_step"][name]) == 2
    assert set(lstm["ratio_to_first"]) == {"ours-generic", "ours-prev", "ours-fused"}
    assert "| lstm | 128 | ours-generic |" in out.with_suffix(".md").read_text()


def test_lstm_speed_and_parts_smoke(capsys):
    """benchmarks/lstm_speed.py (a bare step and the Trainer's program) and lstm_parts.py, one short round each."""
    from benchmarks import lstm_parts, lstm_speed

    lstm_speed.main(["--variants", "op,trainer:op,prev,trainer:prev", "--rounds", "1", "--steps", "2"])
    out = capsys.readouterr().out
    for name in ("op", "trainer:op", "prev", "trainer:prev"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{name} ") and "wall" in ln)
        assert float(line.split()[2]) > 0
    lstm_parts.main(["--rounds", "1", "--calls", "1"])
    out = capsys.readouterr().out
    for name in ("fwd_dots", "fwd_saved", "bwd_loop", "post", "post_barrier", "grad", "two_halves", "grad@highest"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{name} "))
        assert float(line.split()[2]) > 0


def test_lstm_variants_compute_the_library_lstm():
    """The fused-storage prototype, fed LSTMCell's per-gate parameters side by side, and the previous gates give
    the library LSTM's outputs; `previous_recurrent` restores what it patched."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import lstm_variants
    from dlchapter.models import recurrent, recurrent_ops

    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 4)), jnp.float32)
    ours = recurrent.RNN(recurrent.LSTMCell(6), return_sequences=True)
    p = ours.init(jax.random.key(0), x)["params"]["cell"]
    fused = {
        "kernel": jnp.concatenate([p[f"W_{g}x"] for g in "cufo"], -1),
        "recurrent_kernel": jnp.concatenate([p[f"W_{g}a"] for g in "cufo"], -1),
        "bias": jnp.concatenate([p[f"b_{g}"] for g in "cufo"]),
    }
    theirs = recurrent.RNN(lstm_variants.FusedLSTMCell(6), return_sequences=True)
    init = theirs.init(jax.random.key(0), x)["params"]["cell"]
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, fused)
    np.testing.assert_array_equal(init["bias"], np.repeat([0.0, 0.0, 1.0, 0.0], 6))  # unit forget bias
    expected = ours.apply({"params": {"cell": p}}, x)
    assert expected.shape == (3, 5, 6)
    np.testing.assert_allclose(theirs.apply({"params": {"cell": fused}}, x), expected, rtol=1e-6, atol=1e-6)
    gates, options = recurrent_ops._gates, recurrent.RecurrentNet.cpu_compiler_options
    with lstm_variants.previous_recurrent():
        assert recurrent.RecurrentNet("lstm", 6, 2).cpu_compiler_options() == {}
        np.testing.assert_allclose(ours.apply({"params": {"cell": p}}, x), expected, rtol=1e-6, atol=1e-6)
    assert (recurrent_ops._gates, recurrent.RecurrentNet.cpu_compiler_options) == (gates, options)


@pytest.mark.parametrize("masked", [False, True])
def test_lstm_layouts_give_the_ops_values_and_gradients(masked):
    """Every layout variant of benchmarks/lstm_layouts.py but the timing probe (and the two-loop hoist cut inside
    this short sequence) gives the LSTM's values and the gradients of JAX's own reverse mode through the scan
    (`lstm_sequence_autodiff`), in float64, with and without a length mask."""
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import lstm_layouts
    from dlchapter.models.recurrent_ops import lstm_sequence_autodiff

    t, b, f, h = 6, 3, 4, 5
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        args = [jnp.asarray(rng.normal(size=s)) for s in ((h, 4 * h), (f, 4 * h), (4 * h,), (t, b, f), (b, h), (b, h))]
        mask = jnp.asarray(np.arange(t)[:, None] < np.array([t, 2, 0])[None, :]) if masked else None
        w_y, w_c, w_a = (jnp.asarray(rng.normal(size=s)) for s in ((t, b, h), (b, h), (b, h)))

        def loss(fn):
            def value(*a):
                (c, a_t), ys = fn(*a, mask)
                return jnp.sum(ys * w_y) + jnp.sum(c * w_c) + jnp.sum(a_t * w_a)

            return jax.value_and_grad(value, argnums=tuple(range(6)))

        expected = loss(lstm_sequence_autodiff)(*args)
        variants = {k: v for k, v in lstm_layouts.VARIANTS.items() if not k.startswith("probe")}
        variants["hoist_chunk2"] = lstm_layouts._op(
            partial(lstm_layouts._hoist_chunk_forward, 2), lstm_layouts._lib_bwd
        )
        assert {"fm", "fm_slab", "gate_dz", "readback", "hoist_split", "unrolled"} <= set(variants)
        for name, fn in variants.items():
            got = loss(fn)(*args)
            for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
                np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=name)
