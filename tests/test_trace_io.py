"""Readers of training logs: CSV, JSONL, TensorBoard, run directories, the KL lag, and every error message."""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.trace_io import align_kl, read_trace
from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, simulate


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

    from analysis.trace_io import read_trace

    text = "step,beta,kl\n0,4.0,1.5\n1,4.0,1.75\n2,4.0,2.0\n"
    plain, packed = tmp_path / "t.csv", tmp_path / "t.csv.gz"
    plain.write_text(text)
    with gzip.open(packed, "wt") as fh:
        fh.write(text)
    a, b = read_trace(plain), read_trace(packed)
    assert list(b.kl) == list(a.kl) == [1.5, 1.75, 2.0]
