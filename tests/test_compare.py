"""compare-norms: sibling runs, summary, plots, report; resume; divergence and failures; the probes' tags
(the probes themselves: test_compare_protocol.py)."""

import csv
import json

import pytest
import yaml
from conftest import tiny_experiment
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cvlab.compare import compare_norms, make_variants
from cvlab.config import load_config

NAMES = ["norm=batch,bs=4,seed=0", "norm=group,bs=4,seed=0", "norm=batch,bs=2,seed=0", "norm=group,bs=2,seed=0"]


def _exp(tmp_path, **train):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(train={"steps": 2, "eval_every": 2, **train})))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """2 norms × 2 batch sizes × 1 seed through the CLI: 2 steps at batch 4, 4 at batch 2."""
    from cvlab.cli import run

    root = tmp_path_factory.mktemp("compare")
    exp = _exp(root)
    out = root / "out"
    argv = ["compare-norms", str(exp), "--norms", "batch,group", "--batch-sizes", "4,2", "--out", str(out),
            "--protocol", "per-step"]
    assert run(argv) == 0
    return out, argv


def test_sibling_runs_with_identical_tags(compared):
    out, _ = compared
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(NAMES)
    tags, hparams = [], []
    for name in NAMES:
        d = out / name
        assert {"config.yaml", "env.json", "metrics.json", "checkpoints"} <= {p.name for p in d.iterdir()}
        ea = EventAccumulator(str(d), size_guidance={"scalars": 0, "tensors": 0})
        ea.Reload()
        tags.append(set(ea.Tags()["scalars"]))
        hparams.append("_hparams_/session_start_info" in ea.PluginTagToContent("hparams"))
        assert not [p for p in d.iterdir() if p.is_dir() and p.name != "checkpoints"]  # no hparams sub-run
        steps = json.loads((d / "metrics.json").read_text())["step"]
        assert steps == (2 if "bs=4" in name else 4)  # same samples seen
        cfg = load_config(d / "config.yaml")
        ratio = cfg.train.batch_size / 4
        assert cfg.train.lr == pytest.approx(1e-3 * ratio ** 0.5)  # AdamW: square-root scaling by default
        assert cfg.train.betas[1] == pytest.approx(1 - ratio * 0.001)  # and the betas' horizon in samples
        assert cfg.train.checkpoint_every == 200 / ratio
    assert all(t == tags[0] for t in tags) and all(hparams)
    assert {"train/loss", "val/val/word_acc", "grad/first_layer_norm", "grad/last_layer_norm", "grad/clipped_share",
            "smoothness/loss_variation", "smoothness/beta_smoothness", "smoothness/update_beta_smoothness",
            "smoothness/update_loss_variation", "norm/nhw_min"} <= tags[0]


def test_summary_report_and_plots(compared):
    out, _ = compared
    with open(out / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    assert b"\r\n" not in (out / "summary.csv").read_bytes()  # LF lines, as every CSV cvlab writes
    for col in ("norm", "batch_size", "seed", "status", "word_acc", "cer", "train_loss", "train_eval_gap",
                "samples_per_s"):
        assert all(r[col] != "" for r in rows), col
    assert float(next(r for r in rows if r["norm"] == "group")["train_eval_gap"]) == 0.0  # no running stats
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["variants"]) == 4 and len(summary["table"]) == 4
    report = (out / "report.md").read_text()
    assert "| batch | 2 |" in report and "Δ vs batch" in report and "smoothness" in report
    assert "## Protocol" in report and "sqrt scaling" in report and "(sqrt)" in report  # the rule, stated
    assert "no difference in this table is resolved" in report  # one seed
    bn_rows = [line for line in report.splitlines() if line.startswith("| batch | 2 | `")]
    assert bn_rows and all("| 128 |" in line or "| 256 |" in line or "| 512 |" in line for line in bn_rows)
    for png in ("val_acc_vs_step.png", "acc_vs_batch_size.png", "acc_vs_nhw.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in report


def test_rerun_does_no_training(compared, capsys):
    from cvlab.cli import run

    out, argv = compared
    ckpts = sorted(out.glob("*/checkpoints/*.pt"))
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    events = {p: p.stat().st_size for p in out.glob("*/events.out.tfevents.*")}
    capsys.readouterr()
    assert run(argv) == 0
    printed = capsys.readouterr()
    assert "Δ vs batch" in printed.out and printed.out.count("done") >= 4  # the rich table, one row per variant
    assert {p: p.stat().st_mtime_ns for p in ckpts} == before
    assert {p: p.stat().st_size for p in out.glob("*/events.out.tfevents.*")} == events
    assert printed.err.count("finished earlier, skipped") == 4


def test_divergence_and_impossible_variants_do_not_stop_the_others(tmp_path, monkeypatch):
    """group's loss is made NaN (the loop's own check raises Diverged); batch norm at batch size 1 fails preflight."""
    import cvlab.engine.train.session as session_mod

    real_build = session_mod.build_model

    def build(cfg, *args):
        built = real_build(cfg, *args)
        if cfg.norm.name == "group":
            real_loss = built.model.loss
            built.model.loss = lambda *a: real_loss(*a) * float("nan")
        return built

    monkeypatch.setattr(session_mod, "build_model", build)
    base = load_config(_exp(tmp_path, steps=1, eval_every=1))
    res = compare_norms(base, tmp_path / "out", ["batch", "group"], [2, 1], protocol="per-step")
    status = {(r["norm"], r["batch_size"]): (r["status"], r["reason"]) for r in res["rows"]}
    assert status[("batch", 2)][0] == "done"
    assert status[("group", 2)][0] == "diverged" and status[("group", 1)][0] == "diverged"
    assert status[("batch", 1)][0] == "failed" and "batch_size" in status[("batch", 1)][1]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**diverged**" in report and "**failed**" in report


def test_interrupted_variant_resumes(tmp_path):
    """A variant whose metrics.json is short of its budget continues from last.pt instead of starting over."""
    base = load_config(_exp(tmp_path, steps=1, eval_every=1))
    out = tmp_path / "out"
    compare_norms(base, out, ["group"], [2], steps=1, protocol="per-step")
    res = compare_norms(base, out, ["group"], [2], steps=2, protocol="per-step")  # a larger budget: the 1-step run is unfinished
    assert res["rows"][0]["status"] == "done"
    d = out / "norm=group,bs=2,seed=0"
    assert json.loads((d / "metrics.json").read_text())["step"] == 2
    assert "resumed" in json.loads((d / "env.json").read_text())


def test_variants_scale_steps_intervals_and_lr(tmp_path):
    base = load_config(_exp(tmp_path, steps=100, eval_every=50, warmup_steps=10, lr=0.004, checkpoint_every=30))
    made = make_variants(base, ["batch", "layer", "batch_renorm"], [32, 8], 2, smooth_every=5, protocol="per-step")
    vs = {(v.norm, v.batch_size, v.seed): v.cfg for v in made}
    assert len(vs) == 12
    small, big = vs[("batch", 8, 1)], vs[("batch", 32, 0)]
    assert (big.train.steps, small.train.steps) == (100, 400)
    assert (small.train.eval_every, small.train.warmup_steps, small.log.every, small.train.checkpoint_every) == \
        (200, 40, 4, 120)
    assert (big.train.lr, small.train.lr) == (0.004, 0.002) and small.seed == 1  # AdamW: sqrt
    assert small.model.norm.name == "batch" and vs[("layer", 8, 0)].model.norm.name == "layer"
    assert vs[("batch_renorm", 8, 0)].model.norm.renorm_warmup == 4000  # the relaxation, in samples
    assert vs[("batch_renorm", 32, 0)].model.norm.renorm_warmup == 1000
    assert {v.smooth_every for v in made if v.batch_size == 8} == {20}
    assert make_variants(base, ["group"], [32, 8], 1, lr_scaling="none", protocol="per-step")[1].cfg.train.lr == 0.004
    assert make_variants(base, ["group"], [32, 8], 1, lr_scaling="linear", protocol="per-step")[1].cfg.train.lr == 0.001


def test_bad_norm_exits_2_listing_valid_names(write_exp, cli, tmp_path):
    code, _, err = cli("compare-norms", write_exp(), "--norms", "batch,groupp", "--out", tmp_path / "o")
    assert code == 2
    assert "groupp" in err and "group" in err and "instance" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_jobs_run_variants_in_worker_processes(tmp_path):
    from cvlab.engine.progress import Progress

    class Recorded(Progress):
        def __init__(self):
            self.lines = []

        def message(self, text):
            self.lines.append(text)

    base = load_config(_exp(tmp_path, steps=1, eval_every=1))
    progress = Recorded()
    res = compare_norms(base, tmp_path / "out", ["layer", "none"], [2], jobs=2, progress=progress, protocol="per-step")
    assert [r["status"] for r in res["rows"]] == ["done", "done"]
    for name in ("norm=layer,bs=2,seed=0", "norm=none,bs=2,seed=0"):  # what each worker process reported
        assert f"{name}: dataset val: 24 samples" in progress.lines, progress.lines
    assert "messages" not in json.loads((tmp_path / "out" / "norm=none,bs=2,seed=0" / "variant.json").read_text())
    for r in res["rows"]:  # threads divided between the workers
        assert load_config(f"{r['run_dir']}/config.yaml").train.threads >= 1
        assert r["peak_mem_mb"] > 0


# --------------------------------------------------------------------------------------------- issue 22

def _mtimes(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_rerun_with_other_settings_is_refused_before_training(compared, cli):
    """The same --out with --set train.lr/model.act: exit 2 naming a variant and the keys, old and new values;
    no variant trains, no summary is rewritten."""
    out, argv = compared
    before = _mtimes(out)
    code, stdout, err = cli(*argv, "--set", "train.lr=1e-5", "--set", "model.act=tanh")
    assert code == 2
    line = _one_error_line(err)
    assert f"--out {out}: norm=" in line and "was trained with" in line and "3 more variant(s)" in line
    assert "model.act=relu" in line and "model.act=tanh" in line and "train.lr=0.001" in line
    assert "train.lr=1e-05" in line and "use another --out" in line
    assert "finished earlier" not in err and "training" not in err and stdout == ""
    assert _mtimes(out) == before


def test_smaller_steps_on_trained_variants_is_refused(compared, cli):
    out, argv = compared
    before = _mtimes(out)
    code, _, err = cli(*argv, "--steps", "1")
    line = _one_error_line(err)
    assert code == 2 and "has trained" in line and "this command gives it" in line and "--steps" in line
    assert _mtimes(out) == before


def test_onecycle_variant_cannot_be_extended(tmp_path):
    """A larger --steps resumes a variant (test_interrupted_variant_resumes) unless its schedule's length is fixed:
    the engine's own resume check refuses it, now before any variant trains."""
    from cvlab.errors import CvlabError

    base = load_config(_exp(tmp_path, steps=1, eval_every=1, schedule="onecycle"))
    out = tmp_path / "out"
    compare_norms(base, out, ["none"], [2], protocol="per-step")
    before = _mtimes(out)
    with pytest.raises(CvlabError, match=r"norm=none,bs=2,seed=0: train.steps: .*onecycle.*use another --out"):
        compare_norms(base, out, ["none"], [2], steps=2, protocol="per-step")
    assert _mtimes(out) == before


def test_summary_losing_finished_variants_keeps_the_previous(tmp_path):
    base = load_config(_exp(tmp_path, steps=1, eval_every=1))
    out = tmp_path / "out"
    first = compare_norms(base, out, ["layer", "none"], [2], protocol="per-step")
    assert first["kept_previous"] is None and first["outcome"] == "done"
    old_csv = (out / "summary.csv").read_text()

    res = compare_norms(base, out, ["layer"], [2], protocol="per-step")  # a smaller grid: its summary lacks none
    assert "norm=none,bs=2,seed=0 not among them" in res["kept_previous"]
    assert "summary.prev.csv" in res["kept_previous"] and "report.prev.md" in res["kept_previous"]
    assert (out / "summary.prev.csv").read_text() == old_csv
    with open(out / "summary.csv", encoding="utf-8") as f:
        assert [r["norm"] for r in csv.DictReader(f)] == ["layer"]
    prev_report = (out / "report.prev.md").read_text()
    assert "](val_acc_vs_step.prev.png)" in prev_report and "](val_acc_vs_step.png)" not in prev_report
    assert (out / "val_acc_vs_step.prev.png").is_file() and (out / "val_acc_vs_step.png").is_file()
    assert len(json.loads((out / "summary.prev.json").read_text())["variants"]) == 2

    res = compare_norms(base, out, ["none"], [2], protocol="per-step")  # loses layer: the earlier prev is not overwritten
    assert "summary.prev2.csv" in res["kept_previous"]
    assert (out / "summary.prev.csv").read_text() == old_csv
    with open(out / "summary.prev2.csv", encoding="utf-8") as f:
        assert [r["norm"] for r in csv.DictReader(f)] == ["layer"]
    assert compare_norms(base, out, ["none"], [2], protocol="per-step")["kept_previous"] is None  # the same grid again: nothing lost


def test_every_variant_diverged_exits_1(tmp_path, cli, monkeypatch):
    import cvlab.engine.train.session as session_mod

    real_build = session_mod.build_model

    def build(cfg, *args):
        built = real_build(cfg, *args)
        real_loss = built.model.loss
        built.model.loss = lambda *a: real_loss(*a) * float("nan")
        return built

    monkeypatch.setattr(session_mod, "build_model", build)
    out = tmp_path / "out"
    code, stdout, err = cli("compare-norms", _exp(tmp_path, steps=1, eval_every=1), "--norms", "layer",
                            "--batch-sizes", "2", "--out", out)
    assert code == 1
    line = _one_error_line(err)
    assert "no variant finished (1 diverged)" in line and "report.md" in line
    assert "layer bs=2 seed=0: diverged" in stdout and (out / "summary.csv").is_file()  # reported all the same


def test_every_variant_refused_exits_2_without_plot_warnings(tmp_path, cli):
    """Batch norm at batch size 1 is refused by preflight (bad input): exit 2 with that reason; the summary and
    its (empty) plots are written without matplotlib warning about a legend of nothing."""
    import warnings

    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = cli("compare-norms", _exp(tmp_path, steps=1, eval_every=1), "--norms", "batch",
                           "--batch-sizes", "1", "--out", out, "--protocol", "per-step")
    assert code == 2
    line = _one_error_line(err)
    assert "every variant was refused" in line and "batch bs=1 seed=0" in line and "train.batch_size=1" in line
    assert not [w for w in caught if "matplotlib" in w.filename or "report.py" in w.filename], \
        [str(w.message) for w in caught]
    assert "UserWarning" not in err and (out / "acc_vs_batch_size.png").is_file()
    assert json.loads((out / "norm=batch,bs=1,seed=0" / "variant.json").read_text())["bad_input"] is True


def test_variant_messages_reach_the_cli(tmp_path, cli):
    """What building the model reports (group norm's reduced group counts) is printed under the variant when it
    trains in this process."""
    code, _, err = cli("compare-norms", _exp(tmp_path, steps=1, eval_every=1), "--norms", "group",
                       "--batch-sizes", "2", "--out", tmp_path / "out", "--set", "model.backbone.width=0.5")
    assert code == 0  # width 0.5: 48 channels cannot hold 32 groups of 2
    adjusted = [line for line in err.splitlines() if "model.norm.groups: 32 groups" in line]
    assert adjusted and all(line.startswith("  ") for line in adjusted), err
    assert "  dataset val: 24 samples" in err


def test_a_rerun_with_init_from_finds_its_variants_trained_from_the_same_weights(tmp_path):
    """A run stores train.init_from resolved to the checkpoint file; the same --set init_from=RUN asked again
    is the same weights, so the rerun skips the finished variant instead of refusing it."""
    from cvlab.engine.train.start import start_run

    source, _ = start_run(load_config(_exp(tmp_path, steps=1, eval_every=1)), tmp_path / "runs")
    base = load_config(_exp(tmp_path, steps=1, eval_every=1)).model_copy(deep=True)
    base.train.init_from = str(source)
    out = tmp_path / "out"
    compare_norms(base, out, ["batch"], [2], protocol="per-step")
    saved = yaml.safe_load((out / "norm=batch,bs=2,seed=0" / "config.yaml").read_text())
    assert saved["train"]["init_from"].endswith(".pt")  # resolved, not the run folder given
    res = compare_norms(base, out, ["batch"], [2], protocol="per-step")
    assert [r["status"] for r in res["rows"]] == ["done"]
