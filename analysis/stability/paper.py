"""The DynamicVAE paper's stability analysis (Sec. 3.1, Appendix C) side by side with the exact one.

What the paper does (reconstructed from the OCR text; garbled symbols read as
noted):

* State ``x1 = β(t)``, ``x2 = y(t−1)``, ``x3 = y(t−2)`` and error
  ``e(t) = C − y(t−1)`` (Eq. 15): our ``delay = 1``, ``window = 1``.
* Jacobian (Eq. 20) ``A = [[K1, K2, K3], [K4, K5, 0], [0, 1, 0]]`` with
  (Eq. 21) ``K1 = 1``, ``K2 = Ki + Kp/4`` (OCR "1 Kp + Ki": the ¼ is
  ``σ′(0)``), ``K3 = −Kp/4``, ``K4 = a·g′/(1+a)``, ``K5 = 1/(1+a)``.
* Eq. 22: ``λ³ − (K1+K5)λ² + (K1K5 − K2K4)λ − K3K4``.  This is correct: it
  equals our characteristic polynomial divided by ``1 + a``.
* Eq. 23 (bilinear map; OCR shows ``ξ``, ``λ+1``, ``ξ+1``, ``ξ−1``): the
  coefficients of Eq. 25 match ``λ = (1 + ξ)/(1 − ξ)`` (not ``(ξ+1)/(ξ−1)``),
  which also maps ``|λ| < 1`` onto ``Re ξ < 0``; Eq. 25 is correct.
* Eq. 27 (``b3 > 0``, ``b2 > 0``, ``b1b2 − b3b0 > 0``, ``b0 > 0``): the
  expansion of ``b1b2 − b3b0`` is wrong (its I-term carries ``8Ki`` where the
  algebra gives ``4Ki``), and ``b1 > 0`` is not listed.
* Theorem 3.1, **main text Eq. 19**: ``Kp + Ki < −4(1+a)/(a g′)``,
  ``−0.5·Kp²·a·g′² − 2[Kp − 8Ki(1+a)]·g′ + 8(1+a) > 0``, ``Ki > 0``,
  ``Kp > 0`` (the OCR "Kp2 ag 0 (x*1)2" is read as ``Kp²·a·g′²``).
* Theorem 3.1, **appendix Eq. 29** (and its restatement in Appendix C): the same
  but with ``−0.5·Kp·a·g′²`` (OCR "0.5Kpag0(x1)2": ``Kp`` not squared, as
  Eq. 27 divided by ``a`` would also give with its "Kpa2g0(xf)2").

Both versions are "if and only if" claims; :func:`compare` measures where
they disagree with the eigenvalues.  The exact conditions for this loop are
:func:`corrected_theorem`.
"""
from __future__ import annotations

import numpy as np

from klcontrol.analysis.stability.numeric import is_stable_first_order
from klcontrol.papers import DYNAMICVAE_GAINS, PAPER_PLANTS

__all__ = [
    "PAPER_PLANT_POINTS",
    "PAPER_GAINS",
    "paper_jacobian",
    "paper_polynomial",
    "paper_bilinear_coefficients",
    "theorem_main",
    "theorem_appendix",
    "corrected_theorem",
    "corrected_theorem_holds",
    "compare",
    "default_boxes",
]

#: The paper's plants (Table 5): name → (a, g′ at its bound), from :data:`klcontrol.papers.PAPER_PLANTS`.
PAPER_PLANT_POINTS = {name: (p.a, p.gprime0) for name, p in PAPER_PLANTS.items()}
#: The paper's gains (Kp, Ki).
PAPER_GAINS = DYNAMICVAE_GAINS


def paper_jacobian():
    """The paper's Jacobian (Eq. 20–21) in the symbols of :data:`klcontrol.analysis.stability.symbolic.SYMBOLS`.

    Typed from the paper on purpose: it is the object under test, not part of
    our analysis (which derives its Jacobian from the laws).
    """
    import sympy as sp

    from klcontrol.analysis.stability.symbolic import SYMBOLS

    kp, ki, a, gp = (SYMBOLS[k] for k in ("kp", "ki", "a", "gprime"))
    K1, K2, K3 = 1, ki + kp / 4, -kp / 4
    K4, K5 = a * gp / (1 + a), 1 / (1 + a)
    return sp.Matrix([[K1, K2, K3], [K4, K5, 0], [0, 1, 0]])


def paper_polynomial():
    """Eq. 22, ``λ³ − (K1+K5)λ² + (K1K5 − K2K4)λ − K3K4``, as a sympy Poly in λ."""
    import sympy as sp

    from klcontrol.analysis.stability.symbolic import SYMBOLS

    A = paper_jacobian()
    K1, K2, K3, K4, K5 = A[0, 0], A[0, 1], A[0, 2], A[1, 0], A[1, 1]
    lam = SYMBOLS["lambda"]
    return sp.Poly(lam**3 - (K1 + K5) * lam**2 + (K1 * K5 - K2 * K4) * lam - K3 * K4, lam)


def paper_bilinear_coefficients():
    """Eq. 25 ``(b3, b2, b1, b0)`` as printed, with Eq. 21 substituted."""
    import sympy as sp

    A = paper_jacobian()
    K1, K2, K3, K4, K5 = A[0, 0], A[0, 1], A[0, 2], A[1, 0], A[1, 1]
    b3 = K1 + K5 + K1 * K5 - K2 * K4 + K3 * K4 + 1
    b2 = K1 + K5 - K1 * K5 + K2 * K4 - 3 * K3 * K4 + 3
    b1 = -K1 - K5 - K1 * K5 + K2 * K4 + 3 * K3 * K4 + 3
    b0 = -K1 - K5 + K1 * K5 - K2 * K4 - K3 * K4 + 1
    return tuple(sp.simplify(b) for b in (b3, b2, b1, b0))


def _arrays(*vs):
    return np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in vs))


def theorem_main(kp, ki, a, gprime):
    """Theorem 3.1 as stated in the main text (Eq. 19); vectorised, bool array.

    ``Kp + Ki < −4(1+a)/(a g′)``, ``−0.5·Kp²·a·g′² − 2[Kp − 8Ki(1+a)]g′ + 8(1+a) > 0``,
    ``Ki > 0``, ``Kp > 0``.
    """
    kp, ki, a, g = _arrays(kp, ki, a, gprime)
    with np.errstate(divide="ignore", invalid="ignore"):
        c1 = kp + ki < -4 * (1 + a) / (a * g)
    c2 = -0.5 * kp**2 * a * g**2 - 2 * (kp - 8 * ki * (1 + a)) * g + 8 * (1 + a) > 0
    return c1 & c2 & (ki > 0) & (kp > 0)


def theorem_appendix(kp, ki, a, gprime):
    """Theorem 3.1 as in Appendix C (Eq. 29): ``−0.5·Kp·a·g′²`` instead of ``Kp²``."""
    kp, ki, a, g = _arrays(kp, ki, a, gprime)
    with np.errstate(divide="ignore", invalid="ignore"):
        c1 = kp + ki < -4 * (1 + a) / (a * g)
    c2 = -0.5 * kp * a * g**2 - 2 * (kp - 8 * ki * (1 + a)) * g + 8 * (1 + a) > 0
    return c1 & c2 & (ki > 0) & (kp > 0)


def corrected_theorem():
    """The exact conditions for the paper's loop (delay 1, window 1), written with ``G = −g′ > 0``.

    Stable iff ``Ki > 0``, ``(Kp + Ki)·a·G < 4(1+a)`` and
    ``16(1+a)(1 − Ki·G) + 4·Kp·G − a·Kp²·G² > 0``.  No sign condition on Kp.
    The other Routh–Hurwitz relations (``b3 > 0``, ``b1 > 0``) follow from these
    three; :func:`corrected_theorem_holds` evaluates them and the tests check
    them against eigenvalues.

    Returns
    -------
    tuple of sympy relations in ``K_p, K_i, a, G``
    """
    import sympy as sp

    from klcontrol.analysis.stability.symbolic import SYMBOLS

    kp, ki, a = SYMBOLS["kp"], SYMBOLS["ki"], SYMBOLS["a"]
    G = sp.Symbol("G", positive=True)
    return (
        sp.StrictGreaterThan(ki, 0),
        sp.StrictLessThan((kp + ki) * a * G, 4 * (1 + a)),
        sp.StrictGreaterThan(16 * (1 + a) * (1 - ki * G) + 4 * kp * G - a * kp**2 * G**2, 0),
    )


def corrected_theorem_holds(kp, ki, a, gprime):
    """:func:`corrected_theorem` evaluated (vectorised); needs ``g′ < 0``."""
    kp, ki, a, g = _arrays(kp, ki, a, gprime)
    if np.any(g >= 0):
        raise ValueError("the corrected theorem is stated for g′ < 0 (KL decreasing in β)")
    G = -g
    return (ki > 0) & ((kp + ki) * a * G < 4 * (1 + a)) & (16 * (1 + a) * (1 - ki * G) + 4 * kp * G - a * kp**2 * G**2 > 0)


def default_boxes(a, gprime):
    """Sampling boxes ``name → (kp_lo, kp_hi, ki_lo, ki_hi)`` for a plant.

    ``"near"``: ``Kp ∈ [−1/G, 2/G]``, ``Ki ∈ [0, 2/G]`` (``G = |g′|``), around
    the paper's gains, where the Ki bound matters; ``"wide"``:
    ``Kp, Ki ∈ [0, K]`` with ``K = 4(1+a)/(a G)``, the paper's own first bound.
    """
    G = abs(gprime)
    K = 4 * (1 + a) / (a * G)
    return {"near": (-1 / G, 2 / G, 0.0, 2 / G), "wide": (0.0, K, 0.0, K)}


def compare(a, gprime, box, n=1000, window=1, delay=1):
    """Where Theorem 3.1 disagrees with the eigenvalues on an ``n × n`` grid.

    Parameters
    ----------
    a, gprime : float
        Plant.
    box : tuple
        ``(kp_lo, kp_hi, ki_lo, ki_hi)``.
    n : int
        Grid points per axis.
    window, delay : int
        Loop compared against (the paper's model is ``window=1, delay=1``).

    Returns
    -------
    dict
        ``stable_fraction`` and, for ``"main"`` (Eq. 19) and ``"appendix"``
        (Eq. 29): ``rejects_stable`` (fraction of the box the theorem calls
        unstable although every |λ| < 1), ``admits_unstable`` (called stable
        although some |λ| ≥ 1), and one example point of each (or ``None``).
    """
    kp_lo, kp_hi, ki_lo, ki_hi = box
    KP, KI = np.meshgrid(np.linspace(kp_lo, kp_hi, n), np.linspace(ki_lo, ki_hi, n))
    exact = is_stable_first_order(KP, KI, a, gprime, window, delay)
    out = {"box": tuple(float(b) for b in box), "n": n * n, "stable_fraction": float(exact.mean())}
    for name, thm in (("main", theorem_main), ("appendix", theorem_appendix)):
        claim = thm(KP, KI, a, gprime)
        rej = exact & ~claim
        adm = claim & ~exact

        def example(mask):
            idx = np.flatnonzero(mask)
            if not len(idx):
                return None
            i = idx[len(idx) // 2]
            return (float(KP.flat[i]), float(KI.flat[i]))

        out[name] = {
            "rejects_stable": float(rej.mean()),
            "admits_unstable": float(adm.mean()),
            "example_rejected_stable": example(rej),
            "example_admitted_unstable": example(adm),
        }
    return out
