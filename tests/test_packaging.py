"""One installed name: a wheel adds only ``klcontrol`` (with klcontrol.analysis, klcontrol.vae_plant and the shipped
data inside), and it works from a directory holding a user's own ``analysis/`` and ``vae_plant/`` packages."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_names_every_folder():
    st = PYPROJECT["tool"]["setuptools"]
    found = set()
    for pkg, folder in st["package-dir"].items():
        for d, dirs, files in os.walk(ROOT / folder):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            if "__init__.py" in files:
                rel = Path(d).relative_to(ROOT / folder)
                name = ".".join((pkg, *rel.parts))
                if not any(name.startswith(f"{other}") and other != pkg and other.startswith(pkg + ".")
                           for other in st["package-dir"]):  # a mapped subfolder belongs to its own mapping
                    found.add(name)
    assert set(st["packages"]) == found


def test_the_version_is_written_once():
    import klcontrol
    from klcontrol.version import __version__

    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert klcontrol.__version__ == __version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {__version__}" in changelog or "## Unreleased" in changelog


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("klcontrol-*.whl")
    return whl


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_name_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"klcontrol"}
    for must in ("klcontrol/analysis/stability/_generated.py", "klcontrol/vae_plant/training/trainer.py",
                 "klcontrol/data/identify/fit.json", "klcontrol/data/cpu/fit.json", "klcontrol/data/README.md",
                 "klcontrol/data/stability_real/pi_kp0_ki0.1_T5_s0.csv.gz"):
        assert must in names, must
    dist = next(t for t in tops if t.endswith(".dist-info"))
    assert "top_level.txt" not in {n.split("/")[-1] for n in names if n.startswith(dist)} or \
        zipfile.ZipFile(wheel).read(f"{dist}/top_level.txt").decode().split() == ["klcontrol"]


def _site(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "project"  # a user's project with packages named like klcontrol's folders
    for name in ("analysis", "vae_plant"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text("raise ImportError('the user\\'s own package, not klcontrol')\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    return site, work, env


@pytest.mark.slow
def test_from_the_wheel_beside_a_users_own_analysis_package(wheel, tmp_path):
    site, work, env = _site(wheel, tmp_path)
    run = dict(cwd=work, env=env, capture_output=True, text=True)
    r = subprocess.run([sys.executable, "-m", "klcontrol", "stability", "--kp", "0.01", "--ki", "0.005", "--a", "0.0004",
                        "--gprime", "-3.2"], **run)
    assert r.returncode == 0, r.stderr
    assert "STABLE" in r.stdout.upper() and "warning" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "klcontrol", "--help"], **run)
    from klcontrol.cli import ORDER

    for name in ORDER:
        assert name in r.stdout, name
    r = subprocess.run([sys.executable, "-c", "import klcontrol, klcontrol.data as d; print(klcontrol.__file__); "
                        "print(d.path('cpu/fit.json')); from klcontrol import load_fit; print(load_fit(d.path('identify/fit.json')).kind)"],
                       **run)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in lines[:2])


@pytest.mark.slow
def test_identify_with_its_default_prior_from_the_wheel(wheel, tmp_path):
    site, work, env = _site(wheel, tmp_path)
    env = dict(env, OMP_NUM_THREADS="1", KLCONTROL_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "klcontrol", "identify", "--out", "runs", "--betas", "4", "--main", "4",
                        "--settle-steps", "100", "--fit-steps", "60", "--val-steps", "40", "--closed-steps", "40",
                        "--lead", "20", "--hold-min", "3", "--hold-max", "20", "--batch-size", "2", "--jobs", "1", "--relay-steps", "100"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "settled KL" in r.stdout


def test_a_command_package_that_fails_to_import_is_reported(monkeypatch, capsys):
    import importlib.metadata as md

    from klcontrol import cli

    class EP:
        value = "klcontrol_missing_plugin.commands"

    monkeypatch.setattr(md, "entry_points", lambda group=None: [EP()])
    found = cli.command_modules()
    err = capsys.readouterr().err
    assert "simulate" in found and "klcontrol_missing_plugin.commands unavailable" in err
    assert len(err.strip().splitlines()) == 1
