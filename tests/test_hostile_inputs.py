"""A corpus of hostile inputs for every reader, run through the CLI: a clear error or a handled outcome, never a traceback.

Every input is generated here (no binary files in the repository): CSV, JSONL,
gzip, TensorBoard event files, fit JSON, checkpoints, run directories
(``config.json``, ``trace.csv``) and dSprites ``.npz``.  Each case states its
expected outcome: ``"error"`` (exit 1, one line on stderr naming the file) or
``"ok"`` (exit 0).  Pickle payloads would create a marker file if any of their
code ran; the marker must never appear.

``python tests/test_hostile_inputs.py`` prints the tally quoted in the README.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from klcontrol.cli import main

SIZES = (1, 3, 6, 40, 32, 32)
GOOD_CSV = "step,beta,kl,setpoint\n" + "".join(
    f"{t},{5.0 if t < 30 else 15.0},{10 + 5 * np.sin(t / 7):.6f},nan\n" for t in range(60))


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file shows that code from a file ran."""

    marker = ""

    def __reduce__(self):
        return (open, (Payload.marker, "w"))


# ----------------------------------------------------------------------------- writers


def _gz(text: bytes) -> bytes:
    return gzip.compress(text, mtime=0)


def _npz(path, imgs=None, classes=None, values=None, metadata=None, drop=()):
    imgs = np.zeros((2, 64, 64), np.uint8) if imgs is None else imgs
    classes = np.zeros((2, 6), np.int64) if classes is None else classes
    values = classes.astype(float) if values is None else values
    metadata = np.array({"latents_sizes": np.array(SIZES)}, dtype=object) if metadata is None else metadata
    arrays = dict(imgs=imgs, latents_classes=classes, latents_values=values, metadata=metadata)
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})


def _tb_event(path, tags=("beta", "kl"), steps=range(5)):
    from torch.utils.tensorboard import SummaryWriter

    d = Path(path)
    w = SummaryWriter(str(d))
    for t in steps:
        for tag in tags:
            w.add_scalar(tag, 1.0 + t, t)
    w.close()
    return next(d.glob("events.out.tfevents*"))


def _flip(data: bytes, n=64, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    b = bytearray(data)
    for i in rng.choice(len(b), size=min(n, len(b)), replace=False):
        b[i] ^= 0xFF
    return bytes(b)


def _write_sha(pt: Path):
    pt.with_name(pt.name + ".sha256").write_text(f"{hashlib.sha256(pt.read_bytes()).hexdigest()}  {pt.name}\n")


def _resave(pt: Path, edit):
    """Load a real checkpoint, apply ``edit(state)``, save it back with a matching checksum (a consistent lie)."""
    state = torch.load(pt, weights_only=True)
    edit(state)
    torch.save(state, pt)
    _write_sha(pt)


# ----------------------------------------------------------------------------- the corpus

# name -> (outcome, kind, content): kind picks the command (see _argv), content builds the input in a folder.
CASES: dict = {}


def case(name, outcome, kind):
    def register(build):
        CASES[name] = (outcome, kind, build)
        return build

    return register


def _text(name, data):
    def build(d, base):
        p = d / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    return build


_binary = bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))
_deep = "[" * 100_000 + "]" * 100_000

for _name, _outcome, _data in [
    # --- CSV
    ("empty.csv", "error", b""),
    ("header_only.csv", "error", "step,beta,kl\n"),
    ("binary.csv", "error", _binary),
    ("nul_byte.csv", "error", GOOD_CSV[:40] + "\x00" + GOOD_CSV[40:]),
    ("utf16.csv", "error", GOOD_CSV.encode("utf-16")),
    ("latin1.csv", "error", (GOOD_CSV + "60,1.0,2.0,caf\xe9\n").encode("latin-1")),
    ("bom.csv", "ok", "\ufeff" + GOOD_CSV),
    ("crlf.csv", "ok", GOOD_CSV.replace("\n", "\r\n")),
    ("ragged.csv", "error", GOOD_CSV + "60,1.0\n"),
    ("text_value.csv", "error", GOOD_CSV + "60,1.0,abc,nan\n"),
    ("nan_kl.csv", "error", GOOD_CSV + "60,1.0,nan,nan\n"),
    ("inf_beta.csv", "error", GOOD_CSV + "60,inf,1.0,nan\n"),
    ("overflow.csv", "error", GOOD_CSV + "60,1e400,1.0,nan\n"),
    ("duplicate_steps.csv", "error", GOOD_CSV + "59,1.0,1.0,nan\n"),
    ("fractional_step.csv", "error", GOOD_CSV + "60.5,1.0,1.0,nan\n"),
    ("missing_column.csv", "error", "step,beta\n0,1\n1,2\n"),
    ("huge_field.csv", "error", GOOD_CSV + "60,1.0," + "9" * 200_000 + ",nan\n"),
    ("one_row.csv", "error", "step,beta,kl\n0,1.0,2.0\n"),
    ("only_quotes.csv", "error", '"""""\n"\n'),
    # --- gzip-compressed CSV
    ("good.csv.gz", "ok", _gz(GOOD_CSV.encode())),
    ("truncated.csv.gz", "error", _gz(GOOD_CSV.encode())[:200]),
    ("crc.csv.gz", "error", _gz(GOOD_CSV.encode())[:-8] + b"\0\0\0\0" + _gz(GOOD_CSV.encode())[-4:]),
    ("length.csv.gz", "error", _gz(GOOD_CSV.encode())[:-4] + b"\1\0\0\0"),
    ("not_gzip.csv.gz", "error", GOOD_CSV),
    ("garbage_after_header.csv.gz", "error", _gz(GOOD_CSV.encode())[:10] + _binary),
    ("empty.csv.gz", "error", b""),
    ("gzip_of_binary.csv.gz", "error", _gz(_binary)),
    ("two_members.csv.gz", "ok", _gz(GOOD_CSV[:300].encode()) + _gz(GOOD_CSV[300:].encode())),
    ("flipped.csv.gz", "error", _flip(_gz(GOOD_CSV.encode()), 8, seed=3)),
    # --- JSONL
    ("invalid.jsonl", "error", '{"step": 0, "beta": 1, "kl": 2}\n{"step": 1, beta\n'),
    ("array_line.jsonl", "error", "[1, 2, 3]\n"),
    ("missing_key.jsonl", "error", '{"step": 0, "beta": 1}\n'),
    ("string_numbers.jsonl", "ok", "".join(f'{{"step": "{t}", "beta": "{5 if t < 30 else 15}", "kl": '
                                           f'"{10 + 5 * np.sin(t / 7):.5f}"}}\n' for t in range(60))),
    ("nested_value.jsonl", "error", '{"step": 0, "beta": {"a": 1}, "kl": 2}\n'),
    ("nan_literal.jsonl", "error", '{"step": 0, "beta": 1, "kl": NaN}\n{"step": 1, "beta": 1, "kl": 2}\n'),
    ("deep.jsonl", "error", _deep + "\n"),
    ("binary.jsonl", "error", _binary),
    ("empty.jsonl", "error", b""),
    ("bools.jsonl", "error", '{"step": 0, "beta": true, "kl": null}\n'),
    ("huge_int.jsonl", "error", '{"step": 1' + "0" * 400 + ', "beta": 1, "kl": 2}\n'),
    ("inf_number.jsonl", "error", '{"step": 0, "beta": 1e999, "kl": 2}\n'),
    # --- TensorBoard
    ("events.out.tfevents.random", "error", _binary),
    ("events.out.tfevents.empty", "error", b""),
    ("events.out.tfevents.zeros", "error", b"\0" * 64),
]:
    case(_name, _outcome, "trace")(_text(_name, _data))


@case("dir_named.csv", "error", "trace")
def _(d, base):
    (d / "dir_named.csv").mkdir()
    return d / "dir_named.csv"


@case("dangling_link.csv", "error", "trace")
def _(d, base):
    (d / "dangling_link.csv").symlink_to(d / "nowhere.csv")
    return d / "dangling_link.csv"


@case("unreadable.csv", "error", "trace")
def _(d, base):
    p = d / "unreadable.csv"
    p.write_text(GOOD_CSV)
    p.chmod(0)
    if os.access(p, os.R_OK):  # root reads anything: make it a file that cannot be opened for reading instead
        p.unlink()
        p.mkdir()
        (p / "x").write_text("")
    return p


# TensorBoard's own reader keeps the complete records of a file cut mid-record (a log still being written).
@case("tb_truncated", "ok", "trace")
def _(d, base):
    ev = _tb_event(d / "tb_truncated")
    ev.write_bytes(ev.read_bytes()[:-7])
    return ev


@case("tb_crc_flipped", "error", "trace")
def _(d, base):
    ev = _tb_event(d / "tb_crc")
    ev.write_bytes(_flip(ev.read_bytes(), 16, seed=2))
    return ev


@case("tb_no_beta_tag", "error", "trace")
def _(d, base):
    return _tb_event(d / "tb_tags", tags=("loss", "kl"))


@case("tb_good_dir", "ok", "trace")
def _(d, base):
    _tb_event(d / "tb_good", steps=range(60))
    return d / "tb_good"


@case("tb_length_huge", "error", "trace")
def _(d, base):
    p = d / "events.out.tfevents.huge"
    p.write_bytes(struct.pack("<Q", 2**62) + b"\0" * 20)
    return p


# --- fit JSON (klcontrol check --fit, tune --fit)
for _name, _data in [
    ("not_json.json", "{fit: nope"),
    ("empty.json", b""),
    ("list.json", "[1, 2, 3]"),
    ("empty_object.json", "{}"),
    ("no_a.json", '{"kind": "first_order", "g": {"kind": "exp", "A": 26, "k": 0.1}}'),
    ("a_string.json", '{"kind": "first_order", "a": "x", "g": {"kind": "exp", "A": 26, "k": 0.1}}'),
    ("a_nan.json", '{"kind": "first_order", "a": NaN, "g": {"kind": "exp", "A": 26, "k": 0.1}}'),
    ("unknown_gain.json", '{"kind": "first_order", "a": 0.01, "g": {"kind": "magic"}}'),
    ("gain_list.json", '{"kind": "first_order", "a": 0.01, "g": [1, 2]}'),
    ("fit_number.json", '{"kind": "first_order", "a": 0.01, "g": {"kind": "exp", "A": 26, "k": 0.1}, "fit": 3}'),
    ("binary.json", _binary),
    ("deep.json", _deep),
    ("plain_plant_no_range.json", '{"kind": "first_order", "a": 0.01, "g": {"kind": "exp", "A": 26, "k": 0.1}}'),
]:
    case(_name, "error", "fit_json")(_text(_name, _data))


def _fit_case(name, edit):
    """A fit written by `klcontrol fit`, edited by ``edit(fit_dict)``."""
    def build(d, base):
        fit = json.loads(base["fit"].read_text())
        edit(fit["fit"])
        p = d / name
        p.write_text(json.dumps(fit))
        return p

    case(name, "error", "fit_json")(build)


_fit_case("fit_without_boot.json", lambda f: f.pop("boot"))
_fit_case("fit_boot_garbage.json", lambda f: f["boot"].update(g=[{"kind": "exp", "A": "x"}]))
_fit_case("fit_ci_strings.json", lambda f: f.update(a_ci=["a", "b"]))
_fit_case("fit_beta_range_strings.json", lambda f: f.update(beta_range=["lo", "hi"]))


@case("good_fit.json", "ok", "fit_json")
def _(d, base):
    return base["fit"]


# --- checkpoints, config.json and trace.csv of a run directory (klcontrol train --resume)


def _run_case(name, outcome, edit, kind="resume"):
    def build(d, base):
        run = d / name
        shutil.copytree(base["run"], run)
        edit(run, run / "checkpoints" / "step_00000006.pt")
        return run

    case(name, outcome, kind)(build)


def _payload_pickle():
    return pickle.dumps({"step": 6, "model": Payload()}, protocol=2)


_run_case("ckpt_random_bytes", "error", lambda r, pt: pt.write_bytes(_binary))
_run_case("ckpt_truncated", "error", lambda r, pt: pt.write_bytes(pt.read_bytes()[:1000]))
_run_case("ckpt_64_flipped_bytes", "error", lambda r, pt: pt.write_bytes(_flip(pt.read_bytes())))
_run_case("ckpt_one_flipped_bit", "error",
          lambda r, pt: pt.write_bytes(pt.read_bytes()[:5000] + bytes([pt.read_bytes()[5000] ^ 1]) + pt.read_bytes()[5001:]))
_run_case("ckpt_pickle_payload", "error", lambda r, pt: pt.write_bytes(_payload_pickle()))
_run_case("ckpt_pickle_payload_with_checksum", "error", lambda r, pt: (pt.write_bytes(_payload_pickle()), _write_sha(pt)))
_run_case("ckpt_zip_not_torch", "error", lambda r, pt: (
    zipfile.ZipFile(pt, "w").writestr("a.txt", "hello"), _write_sha(pt)))
_run_case("ckpt_empty", "error", lambda r, pt: (pt.write_bytes(b""), _write_sha(pt)))
_run_case("ckpt_nan_weights", "error", lambda r, pt: _resave(pt, lambda s: next(iter(s["model"].values())).fill_(float("nan"))))
_run_case("ckpt_inf_adam_state", "error", lambda r, pt: _resave(
    pt, lambda s: next(iter(s["optimizer"]["state"].values()))["exp_avg"].fill_(float("inf"))))
_run_case("ckpt_controller_kp_inf", "error", lambda r, pt: _resave(pt, lambda s: s["controller"]["params"].update(kp=float("inf"))))
_run_case("ckpt_controller_t_negative", "error", lambda r, pt: _resave(pt, lambda s: s["controller"].update(t=-5)))
_run_case("ckpt_controller_not_dict", "error", lambda r, pt: _resave(pt, lambda s: s.update(controller=[1, 2])))
_run_case("ckpt_step_string", "error", lambda r, pt: _resave(pt, lambda s: s.update(step="6")))
_run_case("ckpt_step_negative", "error", lambda r, pt: _resave(pt, lambda s: s.update(step=-1)))
_run_case("ckpt_model_wrong_shape", "error", lambda r, pt: _resave(
    pt, lambda s: s["model"].update({k: torch.zeros(3) for k in list(s["model"])[:1]})))
_run_case("ckpt_rng_garbage", "error", lambda r, pt: _resave(pt, lambda s: s.update(rng={"torch": 1})))
_run_case("ckpt_missing_keys", "error", lambda r, pt: _resave(pt, lambda s: s.pop("optimizer")))
_run_case("ckpt_model_not_dict", "error", lambda r, pt: _resave(pt, lambda s: s.update(model=3)))
_run_case("ckpt_sha_garbage", "error", lambda r, pt: pt.with_name(pt.name + ".sha256").write_bytes(_binary[:100]))
_run_case("ckpt_sha_missing", "error", lambda r, pt: pt.with_name(pt.name + ".sha256").unlink())
_run_case("ckpt_only_tmp_files", "error", lambda r, pt: [
    (p.rename(p.with_name(p.name + ".tmp"))) for p in sorted((r / "checkpoints").glob("*.pt"))])
_run_case("ckpt_legacy_format_without_checksum", "ok", lambda r, pt: (
    _resave(pt, lambda s: s.update(format=1)), pt.with_name(pt.name + ".sha256").unlink()))
_run_case("ckpt_is_directory", "error", lambda r, pt: (pt.unlink(), pt.mkdir()))
_run_case("config_binary", "error", lambda r, pt: (r / "config.json").write_bytes(_binary))
_run_case("config_not_json", "error", lambda r, pt: (r / "config.json").write_text("{settings"))
_run_case("config_list", "error", lambda r, pt: (r / "config.json").write_text("[]"))
_run_case("config_no_settings", "error", lambda r, pt: (r / "config.json").write_text('{"provenance": {}}'))
_run_case("config_settings_list", "error", lambda r, pt: (r / "config.json").write_text('{"settings": [1]}'))


def _edit_settings(run, **kw):
    cfg = json.loads((run / "config.json").read_text())
    cfg["settings"].update(kw)
    (run / "config.json").write_text(json.dumps(cfg))


_run_case("config_steps_string_overridden", "ok", lambda r, pt: _edit_settings(r, steps="many"))  # --steps 8 wins
_run_case("config_batch_size_string", "error", lambda r, pt: _edit_settings(r, batch_size="x"))
_run_case("config_seed_negative", "error", lambda r, pt: _edit_settings(r, seed=-3))
_run_case("config_device_unknown", "error", lambda r, pt: _edit_settings(r, device="tpu"))
_run_case("config_threads_zero", "error", lambda r, pt: _edit_settings(r, threads=0))
_run_case("config_deep", "error", lambda r, pt: (r / "config.json").write_text(_deep))
_run_case("config_missing", "error", lambda r, pt: (r / "config.json").unlink())
_run_case("trace_binary", "error", lambda r, pt: (r / "trace.csv").write_bytes(_binary))
_run_case("trace_short", "error", lambda r, pt: (r / "trace.csv").write_text(
    "".join((r / "trace.csv").read_text().splitlines(True)[:3])))
_run_case("trace_wrong_header", "error", lambda r, pt: (r / "trace.csv").write_text("a,b,c\n1,2,3\n"))
_run_case("trace_missing", "error", lambda r, pt: (r / "trace.csv").unlink())
_run_case("trace_cut_mid_row", "ok", lambda r, pt: (r / "trace.csv").write_bytes((r / "trace.csv").read_bytes()[:-9]))
_run_case("eval_trace_binary", "error", lambda r, pt: (r / "trace.csv").write_bytes(_binary), kind="evaluate")
_run_case("eval_ckpt_flipped", "error", lambda r, pt: pt.write_bytes(_flip(pt.read_bytes())), kind="evaluate")
_run_case("eval_config_not_json", "error", lambda r, pt: (r / "config.json").write_text("{"), kind="evaluate")


# --- dSprites .npz (klcontrol train --data)


def _npz_case(name, outcome, build_npz):
    def build(d, base):
        p = d / name
        build_npz(p)
        return p

    case(name, outcome, "npz")(build)


_npz_case("payload_metadata.npz", "error", lambda p: _npz(p, metadata=np.array(
    {"latents_sizes": np.array(SIZES), "x": Payload()}, dtype=object)))
_npz_case("payload_imgs.npz", "error", lambda p: _npz(p, imgs=np.array([Payload()], dtype=object)))
_npz_case("payload_only_metadata.npz", "error", lambda p: _npz(p, metadata=np.array(Payload(), dtype=object)))
_npz_case("not_a_zip.npz", "error", lambda p: p.write_bytes(_binary))
_npz_case("truncated.npz", "error", lambda p: (_npz(p), p.write_bytes(p.read_bytes()[:3000])))
_npz_case("flipped.npz", "error", lambda p: (_npz(p), p.write_bytes(_flip(p.read_bytes(), 200))))
_npz_case("missing_keys.npz", "error", lambda p: _npz(p, drop=("latents_values",)))
_npz_case("imgs_wrong_shape.npz", "error", lambda p: _npz(p, imgs=np.zeros((2, 32, 32), np.uint8)))
_npz_case("imgs_float.npz", "error", lambda p: _npz(p, imgs=np.zeros((2, 64, 64), np.float32)))
_npz_case("imgs_gray.npz", "error", lambda p: _npz(p, imgs=np.full((2, 64, 64), 7, np.uint8)))
_npz_case("classes_out_of_range.npz", "error", lambda p: _npz(p, classes=np.full((2, 6), 50, np.int64)))
_npz_case("classes_negative.npz", "error", lambda p: _npz(p, classes=np.full((2, 6), -1, np.int64)))
_npz_case("classes_wrong_width.npz", "error", lambda p: _npz(p, classes=np.zeros((2, 3), np.int64)))
_npz_case("metadata_plain_array.npz", "error", lambda p: _npz(p, metadata=np.array(SIZES)))
_npz_case("metadata_list.npz", "error", lambda p: _npz(p, metadata=np.array([1, 2], dtype=object)))
_npz_case("metadata_sizes_text.npz", "error", lambda p: _npz(p, metadata=np.array({"latents_sizes": "six"}, dtype=object)))
_npz_case("metadata_sizes_zero.npz", "error", lambda p: _npz(p, metadata=np.array(
    {"latents_sizes": np.array([0, 3, 6, 40, 32, 32])}, dtype=object)))
_npz_case("empty_zip.npz", "error", lambda p: zipfile.ZipFile(p, "w").close())
_npz_case("good_small.npz", "ok", lambda p: _npz(p))


# ----------------------------------------------------------------------------- running a case


def _argv(kind, path, tmp):
    if kind == "trace":
        return ["fit", str(path), "--n-boot", "0", "--json"]
    if kind == "fit_json":
        return ["check", "--fit", str(path), "--kp", "0.01", "--ki", "0.005", "--json"]
    if kind == "resume":
        return ["train", "--resume", str(path), "--steps", "8", "--no-progress"]
    if kind == "evaluate":
        return ["evaluate", str(path), "--n-images", "16"]
    return ["train", "--data", str(path), "--out", str(tmp / "npz_run"), "--steps", "2", "--batch-size", "2",
            "--no-progress"]


def run_case(name, d, base, capsys):
    """Run one case; returns (outcome, stderr)."""
    outcome, kind, build = CASES[name]
    Payload.marker = str(d / "MARKER")
    path = build(d, base)
    rc = main(_argv(kind, path, d))
    err = capsys.readouterr().err
    assert not os.path.exists(Payload.marker), f"{name}: code from the file ran"
    assert "Traceback" not in err, err
    # 4: read fine, and the fit says (documented exit status) that the short corpus log does not identify the plant.
    assert rc in (0, 1, 4), (name, rc, err)
    got = "ok" if rc in (0, 4) else "error"
    if got == "error":
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and ": error: " in lines[0], err
        assert Path(path).name in err or str(path) in err, f"{name}: the message does not name the file: {err}"
    return got, err


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished tiny run (checkpoints at 3 and 6) and a fit file written by `klcontrol fit`."""
    root = tmp_path_factory.mktemp("base")
    run = root / "run"
    assert main(["train", "--out", str(run), "--steps", "6", "--batch-size", "4", "--checkpoint-every", "3",
                 "--no-progress"]) == 0
    from klcontrol import ExpGain, FirstOrderPlant, FixedBeta, simulate

    paths = []
    # Long enough (6 time constants) and wide enough in β that the fit is identifiable (exit 0).
    for i, beta in enumerate((2.0, 8.0, 20.0)):
        p = root / f"sim{i}.csv"
        simulate(FixedBeta(beta), FirstOrderPlant(1 / 50, ExpGain(26.0, 0.12)), 300, noise_rel=0.05, seed=i).to_csv(p)
        paths.append(str(p))
    fit = root / "fit.json"
    assert main(["fit", *paths, "--n-boot", "5", "--out", str(fit), "--json"]) == 0
    return {"run": run, "fit": fit}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, base, tmp_path, capsys):
    capsys.readouterr()
    got, err = run_case(name, tmp_path, base, capsys)
    assert got == CASES[name][0], f"{name}: expected {CASES[name][0]}, got {got}: {err}"


def test_corpus_covers_every_reader():
    kinds = {kind for _, kind, _ in CASES.values()}
    assert kinds == {"trace", "fit_json", "resume", "evaluate", "npz"}
    names = " ".join(CASES)
    for reader in (".csv", ".csv.gz", ".jsonl", "tfevents", "tb_", ".json", "ckpt_", "config_", "trace_", ".npz"):
        assert reader in names, reader
    assert len(CASES) >= 100


#: Absurd numbers and sizes on the command line: refused while parsing, before any file is read or any run starts,
#: in one line naming the flag and the value (exit 1), with the estimate for the sizes.
ABSURD_FLAGS = [
    (["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "-3.2", "--window", "1000000000"],
     "--window 1000000000: at most 600"),
    (["check", "--fit", "f.json", "--kp", "0", "--ki", "0.1", "--window", "10000000"], "--window 10000000"),
    (["tune", "--a", "0.0004", "--gprime", "-3.2", "--window", "1000000"], "--window 1000000"),
    (["simulate", "--steps", "1000000000"], "~32 GB of trace"),
    (["simulate", "--window", "1000000"], "--window 1000000"),
    (["train", "--out", "r", "--batch-size", "1000000000"], "GB of activations"),
    (["train", "--out", "r", "--threads", "100000"], "--threads 100000"),
    (["train", "--out", "r", "--seed", "-1"], "--seed -1: must be ≥ 0"),
    (["compare", "--out", "c", "--seeds", "100000000"], "training runs per method"),
    (["compare", "--out", "c", "--jobs", "100000"], "--jobs 100000"),
    (["fit", "x.csv", "--n-boot", "1000000000"], "--n-boot 1000000000"),
    (["verify-stability", "--settled", "s", "--beta-star", "4", "--fit", "f.json", "--kick", "-1"],
     "--kick -1: must be > 0"),
    (["verify-stability", "--settled", "s", "--beta-star", "4", "--fit", "f.json", "--gain", "0", "0.1", "inf"],
     "--gain inf: not a finite number"),
    (["identify", "--betas", "4", "inf"], "--betas inf: not a finite number"),
    (["stability", "--kp", "0.01", "--ki", "0.005", "--a", "1e154", "--gprime", "-3.2"], "--a 1e154"),
    (["stability", "--kp", "0.01", "--ki", "0.005", "--a", "4e-320", "--gprime", "-3.2"], "--a 4e-320"),
    (["stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004", "--gprime", "3.2"], "g′ < 0: pass −G"),
    (["tune", "--a", "0.0004", "--gprime", "-3.2", "--compare", "nan", "0.1"], "--compare nan"),
    (["judge", "log.csv", "--beta-star", "-4"], "--beta-star -4: must be > 0"),
]


@pytest.mark.parametrize("argv, message", ABSURD_FLAGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in ABSURD_FLAGS])
def test_absurd_flags_refused_while_parsing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klcontrol {argv[0]}: error: --") and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


if __name__ == "__main__":  # the tally quoted in README.md
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]) or print(
        f"{len(CASES)} inputs: {sum(o == 'error' for o, _, _ in CASES.values())} clear errors, "
        f"{sum(o == 'ok' for o, _, _ in CASES.values())} handled"))
