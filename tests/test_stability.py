"""Stability analysis against independent computations.

The reference Jacobian here is built by finite differences of the *running*
controller objects and plant (state dicts, one ``step`` each), so it shares
nothing with the symbolic derivation except the laws themselves.
"""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klcontrol import FirstOrderPlant, IncrementalPI, PIDLagrangian, PositionalPI, simulate
from klcontrol.analysis.stability import (
    characteristic_polynomial,
    conditions,
    eigenvalues,
    is_stable,
    jacobian,
    spectral_radius,
)
from klcontrol.analysis.stability import numeric as sn
from klcontrol.analysis.stability.codegen import _shipped, coefficient_functions, source_hash

C0, BSTAR = 10.0, 5.0


def _controller(kp, ki, window, controller):
    if controller == "pid-lagrangian":
        c = PIDLagrangian(kp, ki, C0, filter=window, y0=C0)  # Kd = 0: max(0, rise) has its kink at rest
        sd = c.state_dict()
        sd["state"].update(integral=BSTAR / ki, beta=BSTAR)  # at rest Δ = 0, so β* = Ki·I*
        c.load_state_dict(sd)
        return c
    if controller in ("positional", "positional-official"):
        # β_min is also the law's offset; start the integral at its equilibrium value.
        bmin = BSTAR - 10.0
        mode = "official" if controller == "positional-official" else "conditional"
        c = PositionalPI(kp, ki, C0, beta_min=bmin, filter=window, y0=C0, anti_windup=mode)
        sd = c.state_dict()
        sd["state"]["integral"] = (kp / 2 + bmin - BSTAR) / ki
        sd["state"]["beta"] = BSTAR
        if mode == "official":
            sd["state"]["raw"] = BSTAR
        c.load_state_dict(sd)
        return c
    mode = "official" if controller == "incremental-official" else "clamp"
    return IncrementalPI(kp, ki, C0, beta0=BSTAR, beta_min=-np.inf, beta_max=np.inf, anti_windup=mode,
                         filter=window, y0=C0)


def numeric_jacobian(kp, ki, a, gp, window, delay, controller="incremental", h=1e-5):
    """Finite-difference Jacobian of one update of the real controller + linear-g plant."""
    plant = FirstOrderPlant(a, lambda b: C0 + gp * (np.asarray(b) - BSTAR))
    ctrl = _controller(kp, ki, window, controller)
    sd0 = ctrl.state_dict()
    keys = [k for k in sd0["state"] if k != "filter"]

    def pack(y_prev, meas_prev, sd):
        st_ = sd["state"]
        return np.array([y_prev, meas_prev] + [float(np.asarray(st_[k])) for k in keys]
                        + [float(np.asarray(v)) for v in st_["filter"]])

    def step(x):
        sd = {**sd0, "state": dict(sd0["state"])}
        for i, k in enumerate(keys):
            sd["state"][k] = x[2 + i]
        sd["state"]["filter"] = list(x[2 + len(keys):])
        ctrl.load_state_dict(sd)
        y, _ = plant.step((x[0],), ctrl.beta)
        ctrl.step(y if delay == 0 else x[1])
        return pack(y, y, ctrl.state_dict())

    x0 = pack(C0, C0, sd0)
    np.testing.assert_allclose(step(x0), x0, atol=1e-9)  # it is the equilibrium
    J = np.empty((len(x0), len(x0)))
    for j in range(len(x0)):
        e = np.zeros(len(x0))
        e[j] = h * max(1.0, abs(x0[j]))  # relative step: the positional integral can be large
        J[:, j] = (step(x0 + e) - step(x0 - e)) / (2 * e[j])
    return J


def _true_rho(*args, **kw):
    return np.max(np.abs(np.linalg.eigvals(numeric_jacobian(*args, **kw))))


params = st.tuples(
    st.floats(-1.0, 3.0), st.floats(-0.5, 1.5), st.floats(0.02, 1.5), st.floats(-4.0, -0.1),
    st.integers(1, 8), st.integers(0, 1),
    st.sampled_from(["incremental", "incremental-official", "positional", "positional-official"]),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(params)
def test_spectral_radius_and_verdict_match_finite_difference_jacobian(p):
    kp, ki, a, gp, T, d, ctrl = p
    if ctrl.startswith("positional") and abs(ki) < 1e-3:
        ki = 0.1  # the positional integral's equilibrium needs ki ≠ 0
    rho = _true_rho(kp, ki, a, gp, T, d, ctrl)
    assert abs(spectral_radius(kp, ki, a, gp, T, d, ctrl) - rho) < 1e-6
    if abs(rho - 1) > 1e-6:
        assert is_stable(kp, ki, a, gp, T, d, ctrl) == (rho < 1)


@pytest.mark.parametrize("T,d", [(1, 0), (1, 1), (5, 0), (5, 1)])
def test_paper_scale_plants(T, d):
    for a, gp in ((1 / 2500, -3.2), (1 / 5000, -1.26)):
        for kp, ki in ((0.01, 0.005), (0.3, 0.2), (2.0, 0.5)):
            rho = _true_rho(kp, ki, a, gp, T, d)
            assert abs(spectral_radius(kp, ki, a, gp, T, d) - rho) < 1e-6
            assert is_stable(kp, ki, a, gp, T, d) == (rho < 1)


def test_nonzero_eigenvalues_are_the_polynomial_roots():
    J = numeric_jacobian(0.7, 0.3, 0.3, -1.5, 3, 1)
    ev = np.linalg.eigvals(J)
    ours = eigenvalues(0.7, 0.3, 0.3, -1.5, 3, 1)
    for lam in ours:
        assert np.min(np.abs(ev - lam)) < 1e-6
    assert np.sum(np.abs(ev) > 1e-6) == len(ours)


def test_vectorised_matches_scalar_and_random_eigvals():
    rng = np.random.default_rng(3)
    n = 2000
    kp, ki = rng.uniform(-1, 3, n), rng.uniform(-0.5, 2, n)
    a, gp = 10 ** rng.uniform(-4, 0, n), rng.uniform(-4, -0.1, n)
    for T, d in ((1, 0), (1, 1), (2, 0), (4, 1), (8, 1)):
        rho = spectral_radius(kp, ki, a, gp, T, d)
        # companion eigenvalues of the λ-polynomial (lambdified from sympy) as a second root finder
        import sympy as sp

        from klcontrol.analysis.stability.symbolic import SYMBOLS

        poly = characteristic_polynomial(T, d)
        f = sp.lambdify([SYMBOLS[k] for k in ("kp", "ki", "a", "gprime")], poly.all_coeffs())
        for i in range(0, n, 97):
            cs = np.array([float(c) for c in f(kp[i], ki[i], a[i], gp[i])])
            assert abs(np.max(np.abs(np.roots(cs))) - rho[i]) < 1e-6
        stable = is_stable(kp, ki, a, gp, T, d)
        far = np.abs(rho - 1) > 1e-9
        assert np.array_equal(stable[far], rho[far] < 1)
        assert is_stable(kp[5], ki[5], a[5], gp[5], T, d) == stable[5]


@pytest.mark.parametrize("T", range(1, 9))
def test_copy_chain_charpoly_equals_berkowitz_and_controllers_share_it(T):
    """The fast characteristic polynomial (copies eliminated as λ^-d weights) is the
    Berkowitz charpoly of the full Jacobian, for every controller; and all
    controller kinds give the same polynomial (what lets the generated code be
    keyed by (window, delay) alone)."""
    import sympy as sp
    from sympy.polys.matrices import DomainMatrix

    from klcontrol.analysis.stability.symbolic import SYMBOLS
    from klcontrol.registry import LINEAR_KINDS

    lam = SYMBOLS["lambda"]
    field = sp.QQ.frac_field(*(SYMBOLS[k] for k in ("kp", "ki", "a", "gprime")))
    for d in (0, 1):
        ref = characteristic_polynomial(T, d, "incremental")
        for c in LINEAR_KINDS:
            A = jacobian(T, d, c)
            dm = DomainMatrix.from_Matrix(A)
            berkowitz = sp.Poly(dm.to_field().charpoly(), lam, domain=dm.domain.get_field())
            ours = characteristic_polynomial(T, d, c)
            shifted = sp.Poly(ours.as_expr() * lam ** (A.shape[0] - ours.degree()), lam, domain=field)
            assert shifted.monic() == sp.Poly(berkowitz.as_expr(), lam, domain=field).monic(), (T, d, c)
            assert (ours.as_expr() - ref.as_expr()).expand() == 0, (T, d, c)


def test_shipped_module_has_no_duplicate_bodies_and_one_entry_per_window_and_delay():
    import ast
    import inspect

    from klcontrol.analysis.stability import _generated as gen
    from klcontrol.analysis.stability.codegen import SHIPPED_WINDOWS

    tree = ast.parse(inspect.getsource(gen))
    bodies = [ast.dump(ast.Module(body=f.body, type_ignores=[])) + ast.dump(f.args)
              for f in tree.body if isinstance(f, ast.FunctionDef)]
    assert len(bodies) == len(set(bodies))
    assert set(gen.TABLE) == {(t, d) for t in SHIPPED_WINDOWS for d in (0, 1)}
    # every controller maps to its (window, delay) entry
    from klcontrol.registry import LINEAR_KINDS

    for c in LINEAR_KINDS:
        assert coefficient_functions(c, 3, 1) is gen.TABLE[(3, 1)]


def test_source_hash_covers_every_module_the_derivation_imports():
    from klcontrol.analysis.stability.codegen import GENERATOR_INPUTS

    code = ("import sys; from klcontrol.analysis.stability import symbolic as ss, codegen as cg;"
            "cg.module_source([(2, 1)]); ss.characteristic_polynomial(2, 1, 'positional');"
            "print('\\n'.join(sorted(n for n in sys.modules if n.split('.')[0] == 'klcontrol')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    # Package facades (klcontrol.analysis.stability) import only klcontrol.lazy; their own bytes are hashed
    # through GENERATOR_INPUTS where they matter.
    used = set(out.split()) - {"klcontrol.analysis.stability", "klcontrol.lazy", "klcontrol.version"}
    assert used <= set(GENERATOR_INPUTS), used - set(GENERATOR_INPUTS)


def test_fast_spectral_radius_agrees_with_companion_eigenvalues():
    """Newton pair + deflation + Schur–Cohn against batched companion eigenvalues (z basis) on
    random points: the paper's slow plants and a wide range of plants."""
    rng = np.random.default_rng(11)
    n = 4000
    sets = [(rng.uniform(-0.2, 1.0, n), rng.uniform(-0.05, 0.3, n), np.full(n, 1 / 2500), np.full(n, -3.2)),
            (rng.uniform(-1, 3, n), rng.uniform(-0.5, 2, n), 10 ** rng.uniform(-4, 0, n), rng.uniform(-4, -0.1, n))]
    for kp, ki, a, gp in sets:
        for T, d in ((1, 0), (2, 1), (3, 0), (5, 1), (8, 0)):
            rho = spectral_radius(kp, ki, a, gp, T, d)
            ref = np.max(np.abs(1 + sn._roots_z(sn.shifted_coeffs(kp, ki, a, gp, T, d))), axis=-1)
            assert np.max(np.abs(rho - ref) / ref) < 1e-9, (T, d)
            far = np.abs(ref - 1) > 1e-9
            assert np.array_equal((rho < 1)[far], (ref < 1)[far])
            assert np.array_equal(is_stable(kp, ki, a, gp, T, d)[far], (ref < 1)[far])


def test_long_window_radius_matches_the_jacobian(tmp_path, monkeypatch):
    """T = 20: the z-basis companion is ill conditioned there (roots cluster near λ = 0);
    the deflated λ polynomial is not.  Reference: eigenvalues of the Jacobian."""
    monkeypatch.setenv("KLCONTROL_CACHE", str(tmp_path))
    coefficient_functions.cache_clear()
    try:

        from klcontrol.analysis.stability.symbolic import SYMBOLS

        A = jacobian(20, 0)
        for vals in ((0.01, 0.005, 1 / 2500, -3.2), (0.5, 0.2, 0.05, -1.0)):
            An = np.array(A.subs(dict(zip((SYMBOLS[k] for k in ("kp", "ki", "a", "gprime")), vals))), dtype=float)
            ref = np.max(np.abs(np.linalg.eigvals(An)))
            assert spectral_radius(*vals, window=20) == pytest.approx(ref, rel=1e-9)
            ev = eigenvalues(*vals, window=20)
            assert np.max(np.abs(ev)) == pytest.approx(ref, rel=1e-9)
            big = np.sort(np.abs(np.linalg.eigvals(An)))[::-1][:4]
            assert np.allclose(np.sort(np.abs(ev))[::-1][:4], big, rtol=1e-6)
            assert is_stable(*vals, window=20) == (ref < 1)
    finally:
        coefficient_functions.cache_clear()


@pytest.mark.parametrize("T,d", [(1, 0), (5, 1)])
def test_positional_official_mode_linearises_like_the_real_controller(T, d):
    # The official anti-windup only acts below β_min: at an interior equilibrium its loop is the
    # positional one (an extra copied state, eigenvalue 0), and the shipped code says so.
    for kp, ki, a, gp in ((0.5, 0.2, 0.3, -1.5), (2.0, 0.9, 0.05, -3.0)):
        rho = _true_rho(kp, ki, a, gp, T, d, "positional-official")
        assert abs(spectral_radius(kp, ki, a, gp, T, d, "positional-official") - rho) < 1e-6
        assert spectral_radius(kp, ki, a, gp, T, d, "positional-official") == pytest.approx(
            spectral_radius(kp, ki, a, gp, T, d, "positional"), abs=1e-12)


def test_jacobian_is_built_from_the_laws():
    A = jacobian(1, 1)
    # symbolic state: (y_prev, beta, integrator, p_prev, kl_delayed), as klcontrol.loop.loop_step carries it
    assert A.shape == (5, 5)
    num = numeric_jacobian(0.4, 0.2, 0.1, -2.0, 1, 1)
    # numeric state: (y_prev, meas_prev, beta, integrator, p_prev)
    import sympy as sp

    from klcontrol.analysis.stability.symbolic import SYMBOLS

    An = np.array(A.subs({SYMBOLS["kp"]: 0.4, SYMBOLS["ki"]: 0.2, SYMBOLS["a"]: 0.1, SYMBOLS["gprime"]: -2.0}),
                  dtype=float)
    assert sorted(np.round(np.abs(np.linalg.eigvals(An)), 8))[-1] == pytest.approx(
        np.max(np.abs(np.linalg.eigvals(num))), abs=1e-7)
    assert isinstance(A, sp.Matrix)


def test_conditions_t1_readable_and_exact():
    rel = conditions(1, 1)
    assert len(rel) == 5
    assert all(len(str(r)) < 90 for r in rel)
    import sympy as sp

    from klcontrol.analysis.stability.symbolic import SYMBOLS

    syms = [SYMBOLS[k] for k in ("kp", "ki", "a", "gprime")]
    f = sp.lambdify(syms, sp.And(*rel), "numpy")
    rng = np.random.default_rng(0)
    kp, ki, a, gp = rng.uniform(-2, 3, 5000), rng.uniform(-0.5, 2, 5000), rng.uniform(0.01, 1, 5000), rng.uniform(-4, 1, 5000)
    assert np.array_equal(np.asarray(f(kp, ki, a, gp), dtype=bool), is_stable(kp, ki, a, gp, 1, 1))
    assert len(conditions(1, 0)) == 3


def test_gain_scaling_equals_gprime_scaling():
    rng = np.random.default_rng(1)
    kp, ki, a, gp, s = rng.uniform(-1, 2, 50), rng.uniform(0, 1, 50), rng.uniform(0.01, 1, 50), rng.uniform(-3, -0.1, 50), rng.uniform(0.1, 10, 50)
    for T, d in ((1, 1), (4, 0)):
        np.testing.assert_allclose(sn.bilinear_coeffs(s * kp, s * ki, a, gp, T, d),
                                   sn.bilinear_coeffs(kp, ki, a, s * gp, T, d), rtol=1e-12, atol=1e-12)


def test_linear_simulation_decays_iff_stable():
    rng = np.random.default_rng(7)
    n = 1000
    scale = 10 ** rng.uniform(-1, 1.2, n)  # the delay-0 region reaches far larger gains
    kp, ki = rng.uniform(-0.3, 1, n) * scale, rng.uniform(0.01, 0.5, n) * scale
    a, gp = 0.3, rng.uniform(-3, -0.3, n)
    for T, d in ((1, 0), (1, 1), (3, 1)):
        rho = spectral_radius(kp, ki, a, gp, T, d)
        keep = (np.abs(rho - 1) > 0.03) & (rho < 1.3)
        k = keep.nonzero()[0][:150]
        plant = FirstOrderPlant(a, lambda b, g=gp[k]: C0 + g * (np.asarray(b) - BSTAR))
        ctrl = IncrementalPI(kp[k], ki[k], C0, beta0=BSTAR, beta_min=-np.inf, beta_max=np.inf, filter=T)
        dev0 = 1e-8
        tr = simulate(ctrl, plant, 800, delay=d, y0=C0 + dev0)
        dev = np.max(np.abs(tr.state[-50:] - C0), axis=0)
        decays = dev < dev0
        assert np.array_equal(decays, is_stable(kp[k], ki[k], a, gp[k], T, d)), (T, d)
        assert 0 < decays.sum() < len(k)


def test_bad_input():
    with pytest.raises(ValueError, match="a must be > 0"):
        is_stable(0.1, 0.1, 0.0, -1.0)
    with pytest.raises(ValueError, match="window"):
        spectral_radius(0.1, 0.1, 0.1, -1.0, window=0)
    with pytest.raises(ValueError, match="delay"):
        is_stable(0.1, 0.1, 0.1, -1.0, delay=2)
    with pytest.raises(ValueError, match="controller"):
        is_stable(0.1, 0.1, 0.1, -1.0, controller="pid")
    with pytest.raises(ValueError, match="finite"):
        is_stable(np.nan, 0.1, 0.1, -1.0)
    with pytest.raises(ValueError, match="broadcast"):
        is_stable(np.ones(3), np.ones(4), 0.1, -1.0)


def test_shipped_code_is_current_and_fresh_process_skips_sympy():
    assert _shipped() is not None and _shipped().SOURCE_HASH == source_hash()
    code = ("import sys; from klcontrol.analysis.stability import is_stable, spectral_radius;"
            "import numpy as np; is_stable(np.ones(3), 0.1, 0.01, -1.0, window=8, delay=1);"
            "spectral_radius(0.1, 0.1, 0.01, -1.0, window=5); assert 'sympy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unshipped_window_is_generated_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("KLCONTROL_CACHE", str(tmp_path))
    coefficient_functions.cache_clear()
    try:
        r = spectral_radius(0.5, 0.2, 0.2, -1.0, window=9, delay=0)
        files = list((tmp_path / "stability").glob("*.py"))
        assert len(files) == 1
        assert abs(r - _true_rho(0.5, 0.2, 0.2, -1.0, 9, 0)) < 1e-6
        coefficient_functions.cache_clear()
        assert spectral_radius(0.5, 0.2, 0.2, -1.0, window=9, delay=0) == r  # loaded from the cache file
    finally:
        coefficient_functions.cache_clear()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.floats(0.0, 2.0), st.floats(0.05, 1.5), st.floats(0.02, 1.5), st.floats(-4.0, -0.1), st.integers(1, 6),
       st.integers(0, 1))
def test_pid_lagrangian_linearises_as_the_positional_pi_with_four_times_kp(kp, ki, a, gp, window, delay):
    """PID Lagrangian (Kd = 0) inside its clamps: δβ = Kp·δm + Ki·Σδm, the positional PI's Kp·σ′(0) = Kp/4 form.

    So the exact analysis of the ``positional`` kind at (4·Kp, Ki) decides it; checked against the eigenvalues
    of the finite-difference Jacobian of the running PIDLagrangian.
    """
    ev = np.linalg.eigvals(numeric_jacobian(kp, ki, a, gp, window, delay, controller="pid-lagrangian"))
    ours = eigenvalues(4 * kp, ki, a, gp, window, delay, controller="positional")
    ours = ours[np.abs(ours) > 1e-5]  # a zero root (Kp = 0) is one more copied state
    for lam in ours:
        assert np.min(np.abs(ev - lam)) < 1e-5
    assert np.sum(np.abs(ev) > 1e-5) == len(ours)
    rho = spectral_radius(4 * kp, ki, a, gp, window, delay, controller="positional")
    assert rho == pytest.approx(np.max(np.abs(ev)), abs=1e-6)


@pytest.mark.parametrize("T", range(1, 13))
def test_structured_charpoly_equals_the_jacobian_derivation(T):
    """The characteristic polynomial built from the loop's structure (law and plant linearised alone, the moving
    average's polynomial, the delay) is exactly the one of the whole loop's Jacobian, for every linear kind and
    both delays."""
    from klcontrol.analysis.stability import symbolic as ss
    from klcontrol.registry import LINEAR_KINDS

    for d in (0, 1):
        for c in LINEAR_KINDS:
            assert (ss._charpoly(T, d, c) - ss._charpoly_jacobian(T, d, c)).is_zero, (T, d, c)


@pytest.mark.parametrize("T,d", [(1, 0), (4, 1), (9, 0)])
def test_integer_transforms_equal_sympy_substitution(T, d):
    """The bilinear and shifted coefficients (integer transforms monomial by monomial) against sympy's own
    substitution and expansion of the characteristic polynomial."""
    import sympy as sp

    from klcontrol.analysis.stability.symbolic import SYMBOLS, bilinear_coefficients, shifted_coefficients

    lam, w, z = SYMBOLS["lambda"], SYMBOLS["w"], SYMBOLS["z"]
    p = characteristic_polynomial(T, d)
    n = p.degree()
    q = sp.Poly(sp.cancel(sp.expand((1 - w) ** n * p.as_expr().subs(lam, (1 + w) / (1 - w)))), w).all_coeffs()
    s = sp.Poly(sp.expand(p.as_expr().subs(lam, 1 + z)), z).all_coeffs()
    for ours, ref in ((bilinear_coefficients(T, d), q), (shifted_coefficients(T, d), s)):
        assert len(ours) == len(ref)
        assert all(sp.expand(x - y) == 0 for x, y in zip(ours, ref))


def test_long_window_code_is_printed_directly_and_agrees(monkeypatch):
    """The monomial printer (long windows) and the cse printer give the same numbers."""
    import types

    from klcontrol.analysis.stability import codegen

    mods = []
    for direct in (10**6, 0):
        monkeypatch.setattr(codegen, "DIRECT_DEGREE", direct)
        mod = types.ModuleType("m")
        exec(codegen.module_source([(6, 1)]), mod.__dict__)
        mods.append(mod.TABLE[(6, 1)])
    rng = np.random.default_rng(5)
    kp, ki, a, gp = rng.uniform(-1, 2, 50), rng.uniform(0, 1, 50), rng.uniform(1e-4, 1, 50), rng.uniform(-4, -0.1, 50)
    def flat(out):
        return [np.broadcast_to(np.asarray(v, float), (50,)) for g in out for v in (g if isinstance(g, tuple) else (g,))]

    for k, args in ((0, (kp, ki, a, gp)), (1, (kp, ki, a, gp)), (2, (kp, ki, a)), (3, (kp, ki, a, gp)), (4, (a, gp))):
        x, y = flat(mods[0][k](*args)), flat(mods[1][k](*args))
        assert len(x) == len(y)
        for u, v in zip(x, y):
            assert np.allclose(u, v, rtol=1e-13, atol=1e-13), k


def test_windows_beyond_the_derivable_are_refused_with_an_estimate():
    from klcontrol.analysis.stability.config import MAX_WINDOW, derivation_estimate

    with pytest.raises(ValueError, match=r"at most .*estimated"):
        is_stable(0.1, 0.1, 0.01, -1.0, window=MAX_WINDOW + 1)
    assert derivation_estimate(40) < derivation_estimate(400) < derivation_estimate(MAX_WINDOW + 1)
