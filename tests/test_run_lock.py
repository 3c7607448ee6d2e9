"""klcontrol.vae_plant.training.run_lock and the trainer's use of it: two trainers on one --out never mix runs; dead holders do not block."""
import os
import signal
import subprocess
import sys
import time

import pytest

from klcontrol.cli import main
from klcontrol.vae_plant.training.run_lock import LOCK_NAME, RunLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def test_second_lock_is_refused_and_release_frees_it(tmp_path):
    a = RunLock(str(tmp_path))
    with pytest.raises(ValueError, match=rf"{tmp_path} is in use by another trainer \(pid {os.getpid()}\)"):
        RunLock(str(tmp_path))
    a.release()
    a.release()  # idempotent
    b = RunLock(str(tmp_path))
    assert b.held
    b.release()
    assert not b.held


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = ("import sys, time; from klcontrol.vae_plant.training.run_lock import RunLock; l = RunLock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"pid {p.pid}\)"):
            RunLock(str(tmp_path))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(p.pid)  # the stale file stays …
    RunLock(str(tmp_path)).release()  # … but the lock died with its process


def test_two_trainers_on_one_out_do_not_mix(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--steps", "400", "--batch-size", "2", "--checkpoint-every", "0", "--no-progress", "--seed", "1"]
    p = subprocess.Popen([sys.executable, "-m", "klcontrol", *args, "--out", str(out)], env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "trace.csv").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert p.poll() is None, p.stderr.read()
        # the same --out, a new run with another seed, and a resume: both refused while the first one runs
        for argv in (["train", "--out", str(out), "--steps", "10", "--seed", "2", "--no-progress"],
                     ["train", "--resume", str(out), "--steps", "400", "--no-progress"],
                     ["train", "--out", str(out), "--steps", "10", "--restart", "--no-progress"]):
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert f"{out} is in use by another trainer (pid {p.pid})" in err, err
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # the holder is dead: its lock does not block; the run never reached a checkpoint, so it restarts cleanly
    assert main(["train", "--resume", str(out), "--steps", "400", "--no-progress"]) == 1
    assert "--restart" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--restart", "--steps", "6", "--no-progress"]) == 0
    rows = (out / "trace.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(t) for t in range(6)]  # one run, steps 0…5 once


def test_two_new_trainers_started_together_give_one_clean_run(tmp_path):
    out = tmp_path / "race"
    args = ["-m", "klcontrol", "train", "--out", str(out), "--steps", "30", "--batch-size", "2", "--no-progress"]
    procs = [subprocess.Popen([sys.executable, *args, "--seed", str(seed)], env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    (winner, _), = [(i, err) for i, (rc, err) in enumerate(results) if rc == 0]
    loser_err = results[1 - winner][1]
    assert "Traceback" not in loser_err and len(loser_err.strip().splitlines()) == 1
    assert f"{out} is in use by another trainer" in loser_err or "already holds a run" in loser_err
    import json

    seed = json.loads((out / "config.json").read_text())["settings"]["seed"]
    assert seed == (1, 2)[winner]
    ref = tmp_path / "ref"
    assert main(["train", "--out", str(ref), "--steps", "30", "--batch-size", "2", "--no-progress",
                 "--seed", str(seed)]) == 0
    assert (out / "trace.csv").read_bytes() == (ref / "trace.csv").read_bytes()  # one run, not a mix


def test_remove_run_deletes_only_what_klcontrol_made(tmp_path):
    import json

    import pytest

    from klcontrol.vae_plant.training.run_lock import RunLock, is_klcontrol_run, remove_run

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text(json.dumps({"settings": {}, "provenance": {}}))
    (mine / "trace.csv").write_text("step,beta,kl\n")
    early = tmp_path / "early"
    early.mkdir()
    (early / "excitation.json").write_text("{}")
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("my own work")
    assert is_klcontrol_run(mine) and is_klcontrol_run(early) and not is_klcontrol_run(users)
    with pytest.raises(ValueError, match="never deletes what it did not make"):
        remove_run(users)
    assert (users / "notes.txt").read_text() == "my own work"
    lock = RunLock(str(mine))  # a live trainer holds it: refused, kept
    try:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            err = pool.apply(_remove_in_child, (str(mine),))
        assert "in use by another trainer" in err and (mine / "trace.csv").exists()
    finally:
        lock.release()
    remove_run(mine)
    remove_run(early)
    remove_run(tmp_path / "absent")
    assert not mine.exists() and not early.exists()


def _remove_in_child(path):
    from klcontrol.vae_plant.training.run_lock import remove_run

    try:
        remove_run(path)
    except ValueError as exc:
        return str(exc)
    return ""


def test_a_trainer_refused_by_the_lock_leaves_the_holders_directory(tmp_path, monkeypatch):
    # Two trainers started together both find no directory and "create" it; the one the lock refuses must not
    # remove it (with the holder's lock file) before the holder writes its config there.
    from klcontrol.vae_plant.training import trainer as tr

    out = tmp_path / "race"

    def held_elsewhere(self, run_dir):
        open(os.path.join(run_dir, ".lock"), "a").close()  # what opening the lock file does, then the lock fails
        raise ValueError(f"{run_dir} is in use by another trainer (pid 1); wait for it to finish")

    monkeypatch.setattr(tr, "RunLock", type("HeldLock", (), {"__init__": held_elsewhere}))
    with pytest.raises(ValueError, match="in use by another trainer"):
        tr.train(str(out), preset="tiny", steps=2, batch_size=2, progress=False)
    assert sorted(os.listdir(out)) == [".lock"]
