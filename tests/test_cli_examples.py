"""Every ``klcontrol`` subcommand's ``--help``: help on every flag, the exit status, one example that runs.

The examples are run as written (``$(klcontrol data path NAME)`` expanded), in order so that one command's output
feeds the next (train → evaluate, identify → verify-stability); those that train a VAE get tiny sizes appended
(argparse: the last value of a flag wins), so the whole file runs in seconds.
"""
import re
import shlex
import time

import pytest

from klcontrol.cli import build_parser, main

#: Appended to an example that trains, so that the test takes seconds (the example itself stays realistic).
TINY = {
    "train": ["--steps", "6", "--batch-size", "4", "--no-progress"],
    "evaluate": ["--n-images", "500"],
    "compare": ["--steps", "6", "--batch-size", "4", "--n-images", "500", "--no-beta-vae", "--jobs", "1",
                "--no-progress", "--device", "cpu"],
    # the settled-noise estimate needs ≥ 100 settled samples
    "identify": ["--settle-steps", "100", "--fit-steps", "30", "--val-steps", "20", "--closed-steps", "20",
                 "--lead", "5", "--hold-min", "2", "--hold-max", "5", "--relay-steps", "0", "--batch-size", "2",
                 "--jobs", "1", "--json"],
    # the observed verdict skips 100 rows of transient and needs 40 more
    "verify-stability": ["--steps", "140", "--batch-size", "2", "--jobs", "1"],
    "demo": ["--steps", "3", "--relay-steps", "0", "--n-boot", "5", "--json", "--no-progress"],
    "fit": ["--n-boot", "5"],
}
#: Examples whose input is another example's output run after it.
ORDER = ("train", "evaluate", "identify", "verify-stability")


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


def _example(p) -> str:
    """The one example line of a command's epilog (``example:`` then an indented ``klcontrol …`` line)."""
    m = re.search(r"^example:\n  (klcontrol .+)$", p.epilog or "", re.M)
    assert m, f"{p.prog}: no 'example:' line in its epilog"
    return m[1]


def _argv(line: str) -> list:
    """The example's argv, ``$(klcontrol data path NAME)`` replaced by the shipped file's path."""
    from klcontrol import data

    line = re.sub(r"\$\(klcontrol data path ([^)]+)\)", lambda m: str(data.path(m[1])), line)
    argv = shlex.split(line)
    assert argv[0] == "klcontrol"
    return argv[1:]


COMMANDS = _commands()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_states_exit_status_help_on_every_flag_and_an_example(name):
    p = COMMANDS[name]
    text = p.format_help()
    assert "exit status:" in text and "(default: None)" not in text
    for action in p._actions:
        if action.dest == "help" or action.help == "==SUPPRESS==":
            continue
        assert action.help and action.help.strip(), f"klcontrol {name}: {'/'.join(action.option_strings) or action.dest} has no help"
    assert _example(p).split()[1] == name


@pytest.mark.slow  # the demo's fits and tuning alone take ~50 s on a busy 2-core machine, even at 3 updates
def test_every_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    names = sorted(COMMANDS, key=lambda n: (ORDER.index(n) if n in ORDER else -1, n))
    took = {}
    for name in names:
        argv = _argv(_example(COMMANDS[name])) + TINY.get(name, [])
        if name == "verify-stability":  # the settled run the identify example just made
            argv += ["--settled", str(tmp_path / "runs" / "identify" / "settle_b4")]
        t0 = time.perf_counter()
        rc = main(argv)
        took[name] = time.perf_counter() - t0
        out = capsys.readouterr()
        assert rc == 0, f"klcontrol {' '.join(argv)} exited {rc}: {out.err[-2000:]} ({took})"
        assert "Traceback" not in out.err
    print(took)
    assert sum(took.values()) < 600, took  # a hang shows here; ~110 s measured on a busy 2-core machine
