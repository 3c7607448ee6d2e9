"""klcontrol.fileio: atomic outputs keep the permissions a plain write would give them."""
import os
import stat

import pytest

from klcontrol.fileio import save_figure, write_json, write_text


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_output_gets_the_umask_mode_not_mkstemps_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w") as fh:  # what a plain write gives, the reference
            fh.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.txt", "b.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == want, name


def test_a_replaced_output_keeps_its_mode_and_no_temporary_is_left(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    p = tmp_path / "fig.png"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    fig = plt.figure()
    save_figure(fig, p)
    plt.close(fig)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640 and p.read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["fig.png"]
