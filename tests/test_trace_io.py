"""Readers of training logs: CSV, JSONL, TensorBoard, run directories, the KL lag, and every error message."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, simulate
from klcontrol.analysis.identification.traces import align_kl, read_trace, read_traces


@pytest.fixture(scope="module")
def trace():
    plant = FirstOrderPlant(1 / 200, ExpGain(26.0, 0.12))
    return simulate(IncrementalPI(0.01, 0.005, 10.0, beta0=20.0), plant, 300, noise_rel=0.05, seed=1)


def _same(a, b, setpoint=True):
    np.testing.assert_array_equal(a.step, b.step)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-6)
    np.testing.assert_allclose(a.kl, b.kl, rtol=1e-6)
    if setpoint:
        np.testing.assert_allclose(a.setpoint, b.setpoint, rtol=1e-6)


def test_csv_round_trip_and_run_directory(tmp_path, trace):
    trace.to_csv(tmp_path / "trace.csv")
    _same(read_trace(tmp_path / "trace.csv"), trace)
    got = read_trace(tmp_path)  # a trainer run directory
    _same(got, trace)
    assert got.meta["format"] == "csv" and got.meta["kl_lag"] == 0


def test_csv_custom_columns_and_no_setpoint(tmp_path, trace):
    p = tmp_path / "log.csv"
    rows = ["iteration,kl_loss,weight,recon"] + [f"{s},{float(k)!r},{float(b)!r},1.0" for s, k, b in zip(trace.step, trace.kl, trace.beta)]
    p.write_text("\n".join(rows) + "\n")
    got = read_trace(p, step="iteration", beta="weight", kl="kl_loss")
    _same(got, trace, setpoint=False)
    assert np.all(np.isnan(got.setpoint))


def test_jsonl(tmp_path, trace):
    p = tmp_path / "log.jsonl"
    with open(p, "w") as fh:
        for s, b, k in zip(trace.step, trace.beta, trace.kl):
            fh.write(json.dumps({"step": int(s), "beta": float(b), "kl": float(k), "lr": 1e-4}) + "\n")
        fh.write("\n")
    _same(read_trace(p), trace, setpoint=False)


def test_tensorboard_event_file_and_directory(tmp_path, trace):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for s, b, k, c in zip(trace.step, trace.beta, trace.kl, trace.setpoint):
        w.add_scalar("train/beta", float(b), int(s))
        w.add_scalar("train/kl", float(k), int(s))
        w.add_scalar("train/setpoint", float(c), int(s))
        w.add_scalar("train/recon", 1.0, int(s))
    w.close()
    names = dict(beta="train/beta", kl="train/kl", setpoint="train/setpoint")
    got = read_trace(tmp_path / "tb", **names)
    _same(got, trace)  # TensorBoard stores float32
    assert got.meta["format"] == "tensorboard"
    event = next((tmp_path / "tb").glob("events.out.tfevents*"))
    _same(read_trace(event, **names), trace)
    with pytest.raises(ValueError, match=r"missing scalar tags \['beta'\].*train/kl"):
        read_trace(event, kl="train/kl")


def test_tensorboard_tags_at_different_steps_are_merged_by_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path))
    for s in range(10):
        if s % 3 == 0:
            w.add_scalar("beta", float(s), s)
        if s % 2 == 0:
            w.add_scalar("kl", 100.0 + s, s)
    w.close()
    got = read_trace(tmp_path)
    np.testing.assert_array_equal(got.step, [0, 2, 4, 6, 8])  # KL rows; β held from its last logged value
    np.testing.assert_array_equal(got.beta, [0, 0, 3, 6, 6])
    assert got.meta["beta_held_rows"] == 3 and got.meta["beta_rows_without_kl"] == 2


def test_kl_lag_realigns(tmp_path, trace):
    # a log written in the forward pass: row t holds y(t−1) (y(−1) = 0)
    p = tmp_path / "fwd.csv"
    lagged = np.r_[0.0, trace.kl[:-1]]
    p.write_text("step,beta,kl\n" + "".join(f"{s},{float(b)!r},{float(k)!r}\n" for s, b, k in zip(trace.step, trace.beta, lagged)))
    got = read_trace(p, kl_lag=1)  # rows as logged, the convention in meta (the fit applies it per update)
    np.testing.assert_allclose(got.kl, lagged)
    assert len(got) == len(trace) and got.meta["kl_lag"] == 1 and got.meta["beta_lead"] == 0
    aligned = align_kl(got, 1)
    np.testing.assert_allclose(aligned.kl, trace.kl[:-1])
    np.testing.assert_allclose(aligned.beta, trace.beta[:-1])
    assert len(aligned) == len(trace) - 1 and aligned.meta["kl_lag"] == 0
    sparse = read_trace(p, kl_lag=1)
    sparse.step[:] = sparse.step * 2
    with pytest.raises(ValueError, match="right only for one row per update"):
        align_kl(sparse, 1)


@given(st.integers(3, 40))
def test_align_kl_pairs_beta_t_with_kl_t_plus_1(n):
    from klcontrol import Trace

    t = np.arange(n)
    tr = Trace(t, t * 1.0, t * 10.0, np.zeros(n))
    out = align_kl(tr, 1)
    np.testing.assert_array_equal(out.kl, out.beta * 10 + 10)
    assert align_kl(tr, 0) is tr


# -- error messages -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="trace file not found: .*nope.csv"):
        read_trace(tmp_path / "nope.csv")


def test_empty_files(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_trace(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("step,beta,kl\n")
    with pytest.raises(ValueError, match="no data rows after the header"):
        read_trace(tmp_path / "h.csv")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="empty file"):
        read_trace(tmp_path / "e.jsonl")


def test_missing_columns_name_what_exists(tmp_path):
    (tmp_path / "m.csv").write_text("step,weight,kl\n0,1,2\n")
    with pytest.raises(ValueError, match=r"missing columns \['beta'\]; the file has \['step', 'weight', 'kl'\] "
                                         r"\(pass --beta-col NAME on the command line; step=, beta=, kl= in Python\)"):
        read_trace(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_text('{"_step": 0, "train/beta": 1, "kl": 2}\n{"_step": 1, "kl": 2}\n')
    with pytest.raises(ValueError, match=r"missing key\(s\) in line 1 \['step'\].*pass --step-col _step"):
        read_trace(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match=r"missing keys \['beta'\].*pass --beta-col train/beta"):
        read_trace(tmp_path / "m.jsonl", step="_step")


def test_nan_rows_are_named(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("step,beta,kl\n0,1,2\n1,1,nan\n2,1,3\n3,nan,4\n4,1,inf\n5,,5\n")
    with pytest.raises(ValueError, match=r"3 row\(s\) with NaN or infinite values: 'beta' at line 5; "
                                         r"'kl' at line 3, line 6 \(fix the log or pass --drop-nan; drop_nan=True"):
        read_trace(p)
    got = read_trace(p, drop_nan=True)
    np.testing.assert_array_equal(got.step, [0, 2, 5])  # an empty cell is "not logged": β held, not NaN
    np.testing.assert_array_equal(got.beta, [1, 1, 1])
    (tmp_path / "n.jsonl").write_text('{"step": 0, "beta": 1, "kl": 2}\n{"step": 1, "beta": 1, "kl": NaN}\n')
    with pytest.raises(ValueError, match="'kl' at line 2"):
        read_trace(tmp_path / "n.jsonl")


def test_non_monotone_steps_say_where(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("step,beta,kl\n0,1,2\n1,1,2\n2,1,2\n1,1,2\n3,1,2\n3,1,2\n")
    with pytest.raises(ValueError, match=r"steps do not strictly increase at line 5 \(step 1 after 2\), "
                                         r"line 7 \(step 3 after 3\)"):
        read_trace(p)


def test_bad_values_and_formats(tmp_path):
    (tmp_path / "b.csv").write_text("step,beta,kl\n0,1,two\n")
    with pytest.raises(ValueError, match=r"line 2, column 'kl': 'two' is not a number"):
        read_trace(tmp_path / "b.csv")
    (tmp_path / "r.csv").write_text("step,beta,kl\n0,1\n")
    with pytest.raises(ValueError, match="line 2 has 2 fields, the header has 3"):
        read_trace(tmp_path / "r.csv")
    (tmp_path / "f.csv").write_text("step,beta,kl\n0.5,1,2\n")
    with pytest.raises(ValueError, match="whole step numbers"):
        read_trace(tmp_path / "f.csv")
    (tmp_path / "x.txt").write_text("step,beta,kl\n0,1,2\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_trace(tmp_path / "x.txt")
    assert len(read_trace(tmp_path / "x.txt", format="csv")) == 1
    (tmp_path / "j.jsonl").write_text("{oops\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        read_trace(tmp_path / "j.jsonl")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="no trace.csv or trace.jsonl and no TensorBoard event files"):
        read_trace(tmp_path / "d")
    with pytest.raises(ValueError, match="kl_lag must be 0 or 1"):
        read_trace(tmp_path / "x.txt", format="csv", kl_lag=2)


def test_gzip_csv_is_read_like_plain_csv(tmp_path):
    import gzip

    from klcontrol.analysis.identification.traces import read_trace

    text = "step,beta,kl\n0,4.0,1.5\n1,4.0,1.75\n2,4.0,2.0\n"
    plain, packed = tmp_path / "t.csv", tmp_path / "t.csv.gz"
    plain.write_text(text)
    with gzip.open(packed, "wt") as fh:
        fh.write(text)
    a, b = read_trace(plain), read_trace(packed)
    assert list(b.kl) == list(a.kl) == [1.5, 1.75, 2.0]


# -- TensorBoard and friends, written by the real writers ---------------------------------------------------


def _writer(path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))


def test_resumed_klcontrol_run_honours_purge_step(tmp_path):
    import time

    from klcontrol.vae_plant.training.trace_log import TraceLog

    def block(lo, hi, offset):
        t = np.arange(lo, hi, dtype=float)
        return np.c_[1.0 + t, offset + t, np.zeros((len(t), 2))], np.full(len(t), 3.0)

    log = TraceLog(str(tmp_path), latent_dim=1)
    log.write(*block(0, 40, 100.0))  # the first run got to step 39, its last checkpoint was at step 25
    log.close()
    time.sleep(1.1)  # event file names carry the second they were opened: keep the two files in order
    log = TraceLog(str(tmp_path), latent_dim=1, first_step=25)
    log.write(*block(25, 60, 500.0))
    log.close()
    tb = read_trace(tmp_path / "tb")
    csv_ = read_trace(tmp_path / "trace.csv")
    np.testing.assert_array_equal(tb.step, np.arange(60))
    np.testing.assert_allclose(tb.kl, csv_.kl, rtol=1e-6)  # purged steps replaced by the resumed run's
    assert tb.kl[30] == 530.0


def test_several_runs_are_never_concatenated(tmp_path, capsys):
    from klcontrol.cli import main

    plant = FirstOrderPlant(1 / 100, ExpGain(26.0, 0.12))
    for name, beta in (("run_a", 3.0), ("run_b", 9.0)):
        tr = simulate(IncrementalPI(0.01, 0.005, beta, beta0=beta), plant, 400, noise_rel=0.02, seed=1)
        w = _writer(tmp_path / name)
        for s, b, k in zip(tr.step, tr.beta, tr.kl):
            w.add_scalar("beta", float(b), int(s))
            w.add_scalar("kl", float(k), int(s))
        w.close()
    w = _writer(tmp_path / "other")  # a run of another experiment: skipped
    w.add_scalar("loss", 1.0, 0)
    w.close()
    with pytest.raises(ValueError, match=r"2 TensorBoard runs log 'beta' and 'kl': run_a, run_b; name one with --run"):
        read_trace(tmp_path)
    both = read_traces(tmp_path)
    assert [t.meta["run"] for t in both] == ["run_a", "run_b"] and all(len(t) == 400 for t in both)
    one = read_trace(tmp_path, run="run_b")
    np.testing.assert_array_equal(one.step, np.arange(400))
    with pytest.raises(ValueError, match=r"no TensorBoard run named 'run_c'; runs: \., |no TensorBoard run named"):
        read_trace(tmp_path, run="run_c")
    rc = main(["fit", str(tmp_path), "--n-boot", "0", "--json"])
    s = json.loads(capsys.readouterr().out)
    assert [t["rows"] for t in s["info"]["traces"]] == [400, 400]  # two traces, each its own initial KL
    assert len(s["y_init"]) == 2 and rc in (0, 4)
    assert main(["fit", str(tmp_path), "--run", "run_a", "--n-boot", "0", "--json"]) in (0, 4)
    assert len(json.loads(capsys.readouterr().out)["info"]["traces"]) == 1


def test_add_scalars_child_runs_are_found(tmp_path):
    w = _writer(tmp_path)
    for s in range(20):
        w.add_scalars("train", {"beta": 2.0 + s, "kl": 10.0 - 0.1 * s}, s)
    w.close()
    got = read_trace(tmp_path, beta="train/beta", kl="train/kl")
    np.testing.assert_allclose(got.beta, 2.0 + np.arange(20))
    np.testing.assert_allclose(got.kl, 10.0 - 0.1 * np.arange(20), rtol=1e-6)
    with pytest.raises(ValueError, match=r"missing scalar tags \['beta', 'kl'\].*--beta-col train/beta"):
        read_trace(tmp_path)


def test_tensorboard_step_col_and_same_column_errors(tmp_path):
    w = _writer(tmp_path)
    for s in range(5):
        w.add_scalar("beta", 1.0, s)
        w.add_scalar("kl", 2.0, s)
    w.close()
    with pytest.raises(ValueError, match=r"TensorBoard scalars carry their own step; --step-col \(step=\)"):
        read_trace(tmp_path, step="global_step")
    with pytest.raises(ValueError, match=r"--beta-col and --kl-col \(beta=, kl=\) both name 'kl'"):
        read_trace(tmp_path, beta="kl")
    with pytest.raises(ValueError, match="--run .* selects a TensorBoard run"):
        (tmp_path / "t.csv").write_text("step,beta,kl\n0,1,2\n")
        read_trace(tmp_path / "t.csv", run="x")


def test_wandb_style_history_is_merged_by_step(tmp_path):
    p = tmp_path / "history.jsonl"
    lines = []
    for s in range(6):  # β and KL from separate log calls of the same step, plus a learning-rate-only row
        lines += [{"_step": s, "beta": 1.0 + s}, {"_step": s, "kl": 5.0 - s}, {"_step": s, "lr": 1e-3}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    got = read_trace(p, step="_step")
    np.testing.assert_array_equal(got.step, np.arange(6))
    np.testing.assert_array_equal(got.beta, 1.0 + np.arange(6))
    np.testing.assert_array_equal(got.kl, 5.0 - np.arange(6))
    assert got.meta["rows_merged"] == 12
    p.write_text(json.dumps({"_step": 0, "beta": 1.0, "kl": 2.0}) + "\n" + json.dumps({"_step": 0, "kl": 3.0}) + "\n")
    with pytest.raises(ValueError, match=r"steps do not strictly increase at line 2 \(step 0 after 0\)"):
        read_trace(p, step="_step")


def test_csv_with_a_utf8_bom(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_text("step,beta,kl\n0,1,2\n1,1,3\n", encoding="utf-8-sig")
    assert p.read_bytes()[:3] == b"\xef\xbb\xbf"
    np.testing.assert_array_equal(read_trace(p).kl, [2.0, 3.0])


def test_lightning_loggers_step_and_epoch_level_values(tmp_path):
    L = pytest.importorskip("lightning")
    import torch
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    class M(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, i):
            self.log("kl", 3.0 + self.global_step, on_step=True, on_epoch=True)  # Lightning writes kl_step, kl_epoch
            self.log("beta", 1.0 + 0.1 * self.global_step)
            return self.w * 0.0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    L.Trainer(accelerator="cpu", max_epochs=3, logger=loggers, log_every_n_steps=2, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(
        M(), DataLoader(TensorDataset(torch.zeros(6, 1)), batch_size=1))
    csv_path = tmp_path / "csv" / "version_0" / "metrics.csv"
    tb_path = tmp_path / "tb" / "version_0"
    for path in (csv_path, tb_path):
        with pytest.raises(ValueError, match=r"--kl-col kl_step"):
            read_trace(path)  # no 'kl' column: the message points at the step-level one
        with pytest.raises(ValueError, match=r"--kl-col 'kl_epoch' names an epoch-level value.*pass --kl-col kl_step"):
            read_trace(path, kl="kl_epoch")
        got = read_trace(path, kl="kl_step")  # epoch-end rows (kl_epoch only) are not part of the series
        np.testing.assert_array_equal(got.step, np.arange(1, 18, 2))  # every 2nd step (log_every_n_steps=2)
        np.testing.assert_allclose(got.kl, 3.0 + got.step)
        np.testing.assert_allclose(got.beta, 1.0 + 0.1 * got.step, rtol=1e-6)


def test_every_error_names_the_cli_flag(tmp_path, capsys):
    from klcontrol.cli import main

    (tmp_path / "x.txt").write_text("step,beta,kl\n0,1,2\n")
    (tmp_path / "n.csv").write_text("step,beta,kl\n0,1,nan\n1,2,3\n2,1,2\n3,2,2\n4,1,2\n")
    (tmp_path / "c.csv").write_text("iteration,beta,kl\n0,1,2\n")
    for args, flag in (([str(tmp_path / "x.txt")], "--format csv"), ([str(tmp_path / "n.csv")], "--drop-nan"),
                       ([str(tmp_path / "c.csv")], "--step-col")):
        assert main(["fit", *args, "--n-boot", "0"]) == 1
        err = capsys.readouterr().err
        assert flag in err and "Traceback" not in err
    assert main(["fit", str(tmp_path / "x.txt"), "--format", "csv", "--n-boot", "0"]) == 1  # read, then too short
    assert "need at least 4 rows" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "n.csv"), "--drop-nan", "--n-boot", "0"]) != 1  # the NaN row dropped, fitted


# -- property tests: whatever a writer produces, the reader gives it back ------------------------------------


@st.composite
def _logs(draw):
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    steps = np.cumsum(gaps) - gaps[0] + draw(st.integers(0, 1000))
    finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    beta = [float(v) for v in draw(st.lists(finite, min_size=n, max_size=n))]
    kl = [float(v) for v in draw(st.lists(finite, min_size=n, max_size=n))]
    split = draw(st.lists(st.booleans(), min_size=n, max_size=n))  # β and KL in separate rows of one step
    return steps.astype(int), np.asarray(beta, dtype=float), np.asarray(kl, dtype=float), split


@given(_logs(), st.booleans(), st.sampled_from(["csv", "jsonl"]))
def test_csv_and_jsonl_round_trip(tmp_path_factory, log, bom, fmt):
    steps, beta, kl, split = log
    d = tmp_path_factory.mktemp("prop")
    p = d / f"log.{fmt}"
    if fmt == "csv":
        lines = ["step,beta,kl,lr"]
        for s, b, k, sp in zip(steps, beta, kl, split):
            b, k = repr(float(b)), repr(float(k))
            lines += [f"{s},{b},,", f"{s},,{k},", f"{s},,,0.1"] if sp else [f"{s},{b},{k},0.1"]
    else:
        lines = []
        for s, b, k, sp in zip(steps, beta, kl, split):
            b, k = float(b), float(k)
            objs = [{"step": int(s), "beta": b}, {"step": int(s), "kl": k}] if sp else [
                {"step": int(s), "beta": b, "kl": k}]
            lines += [json.dumps(o) for o in objs]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8-sig" if bom else "utf-8")
    got = read_trace(p)
    np.testing.assert_array_equal(got.step, steps)
    np.testing.assert_array_equal(got.beta, beta)
    np.testing.assert_array_equal(got.kl, kl)


@settings(max_examples=4)  # each example waits a second between event files
@given(_logs(), st.integers(0, 3))
def test_tensorboard_round_trip_with_a_purged_restart(tmp_path_factory, log, cut):
    import time

    steps, beta, kl, _ = log
    d = tmp_path_factory.mktemp("tbprop")
    w = _writer(d)
    for s, b, k in zip(steps, beta, kl):
        w.add_scalar("beta", b, int(s))
        w.add_scalar("kl", k + 1.0, int(s))  # values the restart replaces
    w.close()
    keep = max(len(steps) - cut, 1)
    time.sleep(1.05)
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(d), purge_step=int(steps[keep - 1]))
    for s, b, k in zip(steps[keep - 1:], beta[keep - 1:], kl[keep - 1:]):
        w.add_scalar("beta", b, int(s))
        w.add_scalar("kl", k, int(s))
    w.close()
    got = read_trace(d)
    np.testing.assert_array_equal(got.step, steps)
    np.testing.assert_array_equal(got.beta, beta.astype(np.float32))
    np.testing.assert_array_equal(got.kl[keep - 1:], kl[keep - 1:].astype(np.float32))
