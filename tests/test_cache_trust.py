"""Nothing runs from a cache another user could have written (klcontrol/cache.py): planted files are ignored,
the code is generated in memory, and the results are the same."""
import os
import stat
import warnings

import numpy as np
import pytest

from klcontrol import cache


@pytest.fixture
def base(tmp_path, monkeypatch):
    b = tmp_path / "cache"
    monkeypatch.setenv("KLCONTROL_CACHE", str(b))
    cache._WARNED.clear()
    return b


def test_a_private_cache_is_made_private_and_trusted(base):
    d = cache.private_dir("stability")
    assert d == base / "stability" and cache.untrusted_reason(d) is None
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    cache.write_private(d / "x.py", "X = 1\n")
    assert stat.S_IMODE(os.stat(d / "x.py").st_mode) == 0o600


@pytest.mark.parametrize("where", ["base", "folder", "file"])
def test_group_or_world_writable_is_refused(base, where):
    d = cache.private_dir("stability")
    f = d / "x.py"
    cache.write_private(f, "X = 1\n")
    target = {"base": base, "folder": d, "file": f}[where]
    os.chmod(target, 0o777 if where != "file" else 0o666)
    assert "writable by others" in cache.untrusted_reason(f)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root")
def test_a_file_of_another_user_is_refused(base):
    d = cache.private_dir("stability")
    f = d / "x.py"
    cache.write_private(f, "X = 1\n")
    os.chown(f, 65534, 65534)
    assert "belongs to another user" in cache.untrusted_reason(f)


def test_a_planted_stability_module_is_never_imported(base, tmp_path):
    from klcontrol.analysis.stability import codegen
    from klcontrol.analysis.stability.api import is_stable

    base.mkdir()
    os.chmod(base, 0o777)  # a team's shared cache
    (base / "stability").mkdir()
    marker = tmp_path / "ran"
    name = f"T12_d0_{codegen.source_hash()}.py"  # the name anyone can compute from the installed sources
    (base / "stability" / name).write_text(f"open({str(marker)!r}, 'w').write('x')\nTABLE = {{}}\n")
    codegen.coefficient_functions.cache_clear()
    with pytest.warns(RuntimeWarning, match="writable by others"):
        got = is_stable(0.01, 0.005, 1 / 2500, -3.2, window=12)
    codegen.coefficient_functions.cache_clear()
    assert not marker.exists() and bool(got) is True


def test_a_planted_kernel_is_never_imported(base, tmp_path):
    pytest.importorskip("numba")
    import hashlib

    from klcontrol import ExpGain, FirstOrderPlant, IncrementalPI, compiled, simulate

    ctrl = IncrementalPI([0.01, 0.02], 0.005, 10.0, beta0=5.0, filter=3)
    plant = FirstOrderPlant(0.05, ExpGain(30.0, 0.2))
    key = compiled.structure_key(plant, ctrl, 0, False, True)
    compiled._KERNELS.pop(key, None)
    path = compiled._path(key, plant, ctrl)
    path.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    body = f"open({str(marker)!r}, 'w').write('x')\n"
    path.write_text(f"# sha256 {hashlib.sha256(body.encode()).hexdigest()}\n{body}")  # a valid-looking hash
    os.chmod(path.parent, 0o777)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = simulate(ctrl, plant, steps=300, engine="compiled")
    b = simulate(ctrl, plant, steps=300, engine="numpy")
    assert not marker.exists() and a.meta["engine"] == "compiled"
    np.testing.assert_allclose(a.kl, b.kl, rtol=1e-9)
    compiled._KERNELS.pop(key, None)
