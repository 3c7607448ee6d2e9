"""The DynamicVAE paper's Theorem 3.1 against the eigenvalues."""
import numpy as np
import sympy as sp

from klcontrol.analysis.stability import (
    characteristic_polynomial,
    eigenvalues,
    is_stable,
    spectral_radius,
    to_statespace,
)
from klcontrol.analysis.stability.paper import (
    PAPER_GAINS,
    PAPER_PLANT_POINTS,
    compare,
    corrected_theorem,
    corrected_theorem_holds,
    default_boxes,
    paper_bilinear_coefficients,
    paper_polynomial,
    theorem_appendix,
    theorem_main,
)
from klcontrol.analysis.stability.symbolic import SYMBOLS, bilinear_coefficients

a = SYMBOLS["a"]


def test_eq22_is_our_polynomial_for_delay1_window1():
    ours = characteristic_polynomial(1, 1).as_expr()
    assert sp.simplify(paper_polynomial().as_expr() * (1 + a) - ours) == 0
    # and not the delay-0 loop the code actually runs (a quadratic there)
    assert characteristic_polynomial(1, 0).degree() == 2


def test_eq25_bilinear_coefficients_are_right():
    for b, q in zip(paper_bilinear_coefficients(), bilinear_coefficients(1, 1)):
        assert sp.simplify(b * (1 + a) - q) == 0


def test_paper_gains_are_stable_on_both_plants_and_both_delays():
    kp, ki = PAPER_GAINS
    for pa, pg in PAPER_PLANT_POINTS.values():
        assert theorem_main(kp, ki, pa, pg) and theorem_appendix(kp, ki, pa, pg)
        for d in (0, 1):
            assert is_stable(kp, ki, pa, pg, 1, d) and is_stable(kp, ki, pa, pg, 5, d)


def test_main_text_version_rejects_stable_gains_never_admits_unstable():
    for pa, pg in PAPER_PLANT_POINTS.values():
        for box in default_boxes(pa, pg).values():
            r = compare(pa, pg, box, n=300)
            assert r["main"]["admits_unstable"] == 0.0
        r = compare(pa, pg, default_boxes(pa, pg)["near"], n=300)
        assert r["main"]["rejects_stable"] > 0.3
        kp, ki = r["main"]["example_rejected_stable"]
        # the rejected gains really are stable: python-control's poles agree
        assert np.max(np.abs(to_statespace(kp, ki, pa, pg, 1, 1).poles())) < 1
        assert not theorem_main(kp, ki, pa, pg)


def test_appendix_version_admits_unstable_gains():
    pa, pg = PAPER_PLANT_POINTS["dsprites"]
    r = compare(pa, pg, default_boxes(pa, pg)["wide"], n=300)
    assert r["appendix"]["admits_unstable"] > 0.01
    kp, ki = r["appendix"]["example_admitted_unstable"]
    assert theorem_appendix(kp, ki, pa, pg)
    assert spectral_radius(kp, ki, pa, pg, 1, 1) > 1
    assert np.max(np.abs(to_statespace(kp, ki, pa, pg, 1, 1).poles())) > 1


def test_negative_kp_can_be_stable_although_the_theorem_demands_kp_positive():
    pa, pg = PAPER_PLANT_POINTS["dsprites"]
    assert is_stable(-0.05, 0.01, pa, pg, 1, 1) and not theorem_main(-0.05, 0.01, pa, pg)


def test_corrected_theorem_is_exact():
    rng = np.random.default_rng(5)
    n = 200_000
    A, G = 10 ** rng.uniform(-4, 0.5, n), 10 ** rng.uniform(-1, 1, n)
    K = 4 * (1 + A) / (A * G) * rng.choice([1.0, 1e-3], n)
    kp, ki = rng.uniform(-1, 1, n) * K, rng.uniform(-0.1, 1, n) * K
    holds = corrected_theorem_holds(kp, ki, A, -G)
    assert np.array_equal(holds, is_stable(kp, ki, A, -G, 1, 1))
    idx = rng.choice(n, 300, replace=False)
    rho = np.max(np.abs(eigenvalues(kp[idx], ki[idx], A[idx], -G[idx], 1, 1)), axis=-1)
    far = np.abs(rho - 1) > 1e-9
    assert np.array_equal(holds[idx][far], rho[far] < 1)
    assert len(corrected_theorem()) == 3
