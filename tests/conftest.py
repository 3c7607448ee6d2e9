"""Test settings: a small, deadline-free hypothesis profile and one torch thread keep the suite fast on shared CI machines."""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread():
    # Tiny models on a shared 2-core machine: extra intra-op threads only contend.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _one_thread_each_test():
    # A test whose command changes torch's thread count and is stopped before restoring it (a simulated Ctrl-C,
    # SIGTERM) must not leave later tests of the same worker on another count: in-process reference runs would then
    # differ from subprocess runs in the last digits.
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True, scope="session")
def _fresh_kernel_cache(tmp_path_factory):
    # simulate(engine="auto") compiles when a kernel is on disk: a fresh cache per session makes the engine
    # every test gets independent of what earlier runs or benchmarks left in ~/.cache/klcontrol.
    mp = pytest.MonkeyPatch()
    mp.setenv("KLCONTROL_CACHE", str(tmp_path_factory.mktemp("klcontrol-cache")))
    yield
    mp.undo()


@pytest.fixture
def fit_file(tmp_path, capsys):
    """``make(plant, betas, steps)``: fit.json written by ``klcontrol fit`` from open-loop runs of a plant."""
    from klcontrol import FixedBeta, simulate
    from klcontrol.cli import main

    def make(plant, betas, steps):
        paths = []
        for i, beta in enumerate(betas):
            p = tmp_path / f"run{i}.csv"
            simulate(FixedBeta(beta), plant, steps, noise_rel=0.05, seed=i).to_csv(p)
            paths.append(str(p))
        out = tmp_path / "fit.json"
        assert main(["fit", *paths, "--n-boot", "10", "--out", str(out), "--json"]) == 0
        capsys.readouterr()
        return out

    return make


@pytest.fixture(scope="module")
def ray_alone(tmp_path_factory):
    """Hold an exclusive lock while a module's local Ray runs: test workers (pytest-xdist) start one Ray at a time
    (two local Rays on one machine contend for ports and for the listeners the hostile-runs tests inspect)."""
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"klcontrol-tests-ray-{os.getuid()}.lock")
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
