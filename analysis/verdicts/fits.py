"""Stability verdicts of given gains on a saved fit or plant, whatever its kind (``klcontrol check``).

First-order fits and plants are checked exactly (:func:`klcontrol.analysis.stability.robust_stability`) over every g′
that the fitted g takes on a β range, widened to the bootstrap band of g′, and at the estimate of ``a`` and both
ends of its confidence interval; any other fit kind through its linearisations
(:func:`klcontrol.analysis.stability.lti.check_fit`).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["stability_verdict", "format_stability", "check_first_order", "check_fit_file",
           "format_verdict", "design_problems", "Unidentified", "critical_gains", "format_critical",
           "measured_critical_gains", "format_measured",
           "check_plant_numbers"]


class Unidentified(ValueError):
    """A fit that does not identify the plant, so no gains can be designed or verified on it.

    Attributes
    ----------
    path : str
        The fit file.
    problems : list of str
        Why (:func:`design_problems`).
    """

    def __init__(self, path, problems):
        super().__init__(f"{path} does not identify the plant: {'; '.join(problems)}")
        self.path, self.problems = str(path), list(problems)


def design_problems(fit, beta_range=None) -> list:
    """Why gains should not be checked or tuned on ``fit`` over ``beta_range`` (empty: it may be).

    Parameters
    ----------
    fit : object
        From :func:`klcontrol.analysis.identification.fits.load_fit`.  A first-order fit answers with
        :meth:`~klcontrol.analysis.identification.first_order.PlantFit.design_problems`; a plain
        plant (no data behind it) with nothing; another fit kind with its
        ``identifiability`` reasons when it says ``identifiable`` is false.
    beta_range : (float, float), optional
        β range of the design (default: the fit's).

    Returns
    -------
    list of str
    """
    if callable(getattr(fit, "design_problems", None)):
        lo, hi = beta_range if beta_range is not None else (None, None)
        return list(fit.design_problems(lo, hi))
    if getattr(fit, "identifiable", None) is False:
        return list((getattr(fit, "identifiability", None) or {}).get("reasons") or ["marked not identifiable"])
    return []


def check_first_order(fit, kp, ki, window=1, delay=0, controller="incremental", beta_range=None,
                      widen: bool = True) -> dict:
    """Exact robust verdict of ``(kp, ki)`` on a first-order fit or plant.

    Parameters
    ----------
    fit : PlantFit or FirstOrderPlant
        A fit (with g′ bands and an interval for ``a``) or a plain plant.
    kp, ki : float
        Gains.
    window, delay, controller
        Loop configuration.
    beta_range : (float, float), optional
        β range the loop visits (default: the fit's; required for a plain plant).
    widen : bool
        Widen g′ to its bootstrap band and check ``a`` at both ends of its interval (fits only).

    Returns
    -------
    dict
        JSON-able: ``stable``, the ranges checked, the worst case and ``per_a`` details.
    """
    from klcontrol.analysis.stability import robust_stability

    if not (math.isfinite(kp) and math.isfinite(ki)):
        raise ValueError("kp and ki must be finite")
    is_fit = hasattr(fit, "gprime_range") and hasattr(fit, "a_ci")
    if is_fit:
        lo, hi = beta_range or fit.beta_range
        g_lo, g_hi = fit.gprime_range(lo, hi, ci=widen)
        a_values = [fit.a] + ([v for v in fit.a_ci if math.isfinite(v)] if widen else [])
    else:
        if beta_range is None:
            raise ValueError("a plant without a fit needs a β range: give --beta-range LO HI")
        lo, hi = beta_range
        gp = np.asarray(fit.g.derivative(np.linspace(lo, hi, 513)), dtype=float)
        g_lo, g_hi = float(gp.min()), float(gp.max())
        a_values = [float(fit.a)]
    if not hi >= lo:
        raise ValueError(f"the β range needs LO ≤ HI, got {lo}, {hi}")
    cfg = dict(window=window, delay=delay, controller=controller)
    results = [(a, robust_stability(kp, ki, a, g_lo, g_hi, **cfg)) for a in a_values]
    worst_a, worst = max(results, key=lambda ar: ar[1].worst_spectral_radius)
    return {
        "stable": all(r.stable for _, r in results), "fit_kind": "first_order", "kp": kp, "ki": ki, **cfg,
        "beta_range": [lo, hi], "gprime_range": [g_lo, g_hi], "widened_to_ci": bool(widen and is_fit),
        "a_checked": [a for a, _ in results],
        "worst_spectral_radius": worst.worst_spectral_radius, "worst_gprime": worst.worst_gprime, "worst_a": worst_a,
        "gain_margin": min(r.gain_margin for _, r in results),
        "per_a": [dict(a=a, **r.to_dict()) for a, r in results],
    }


def check_fit_file(path, kp, ki, window=1, delay=0, controller="incremental", beta_range=None, setpoints=None,
                   point: bool = False) -> dict:
    """Robust verdict of ``(kp, ki)`` on the fit or plant saved at ``path``, whatever its kind.

    Parameters
    ----------
    path : str or Path
        Saved fit or plant (:func:`klcontrol.analysis.identification.fits.load_fit`).
    kp, ki : float
        Gains.
    window, delay, controller
        Loop configuration.
    beta_range : (float, float), optional
        β range (default: the fit's).
    setpoints : sequence of float, optional
        Operating points for non-first-order fits.
    point : bool
        Point estimates only (no widening, no bootstrap draws).

    Returns
    -------
    dict
        JSON-able verdict with ``stable`` and ``fit_kind``.
    """
    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.stability.lti import check_fit
    from klcontrol.plant import FirstOrderPlant

    if int(window) < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    fit = load_fit(path)
    if isinstance(fit, FirstOrderPlant):  # a first-order fit or plain plant: the exact path
        if setpoints is not None:
            if beta_range is not None:
                raise ValueError("give --setpoint or --beta-range, not both: a first-order fit is checked over the β "
                                 "range the set points map to")
            beta_range = _setpoint_betas(fit, setpoints)
        try:
            return check_first_order(fit, kp, ki, window, delay, controller, beta_range, widen=not point)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    try:
        out = check_fit(fit, kp, ki, window, delay, controller, setpoints=setpoints, beta_range=beta_range,
                        draws=not point)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return {"stable": out.pop("stable"), "fit_kind": getattr(fit, "kind", type(fit).__name__), **out}


def _setpoint_betas(fit, setpoints):
    """The β range ``[min β*, max β*]`` with ``g(β*) = C`` for the set points ``C`` (first-order fit)."""
    betas = []
    for c in setpoints:
        try:
            b = float(fit.g.inverse(float(c)))
        except (ValueError, ZeroDivisionError, OverflowError):
            b = math.nan
        if not (math.isfinite(b) and b > 0):
            raise ValueError(f"--setpoint {c:g}: the fitted g(β) never reaches {c:g} nats at a positive β")
        betas.append(b)
    return (min(betas), max(betas))


def critical_gains(path, ratios, window=1, delay=0, controller="incremental", beta_range=None, setpoints=None,
                   point: bool = False) -> dict:
    """The critical ``Ki`` on each ray ``Kp = r·Ki`` over the plants a saved fit stands for, with the period.

    First-order fit: every ``a`` :func:`check_first_order` checks (the estimate and its interval unless
    ``point``) and g′ at 9 points of the (widened) range; any other fit: its linearisation at each operating
    point (:func:`klcontrol.analysis.stability.lti.operating_points`, or ``setpoints``). The smallest critical
    ``Ki`` is the one a design must stay below; ``range`` shows how much the plants disagree.

    Returns
    -------
    dict
        ratio (``"%g"``) → ``{"ki": smallest, "kp", "period" (at the smallest), "range": [lo, hi], "plants": n}``
        (``ki`` None when no checked plant turns unstable on the ray up to Ki = 100).
    """
    from klcontrol.analysis.identification.fits import load_fit
    from klcontrol.analysis.stability.critical import critical_gain
    from klcontrol.plant import FirstOrderPlant

    fit = load_fit(path)
    cfg = dict(window=window, delay=delay, controller=controller)
    if isinstance(fit, FirstOrderPlant):
        if setpoints is not None:
            beta_range = _setpoint_betas(fit, setpoints)
        v = check_first_order(fit, 0.0, 0.0, beta_range=beta_range, widen=not point, **cfg)
        g_lo, g_hi = v["gprime_range"]
        plants = [dict(a=a, gprime=float(g)) for a in v["a_checked"] for g in np.linspace(g_lo, g_hi, 9) if g < 0]
    else:
        from klcontrol.analysis.stability.lti import operating_points

        sps = list(setpoints) if setpoints is not None else operating_points(fit, beta_range)
        plants = [dict(plant=fit, setpoint=float(c)) for c in sps]
    out = {}
    for r in ratios:
        found = [critical_gain(r, **p, **cfg) for p in plants]
        ks = [c for c in found if c is not None]
        if not ks:
            out[f"{r:g}"] = dict(ki=None, kp=None, period=None, range=None, plants=len(plants))
            continue
        low = min(ks, key=lambda c: c.ki)
        out[f"{r:g}"] = dict(ki=low.ki, kp=low.kp, period=low.period if math.isfinite(low.period) else None,
                             range=[low.ki, max(c.ki for c in ks)], plants=len(plants),
                             stable_up_to_100=len(ks) < len(plants))
    return out


#: How far (relative) outside the measured interval a model's critical gain may lie and still agree.
MEASURED_TOLERANCE = 0.15


def measured_critical_gains(paths, beta_star, ratios, model=None, window=1, delay=0, controller="incremental") -> dict:
    """The critical ``Ki`` on each ray from the excitation runs' measured frequency response, beside a model's.

    :func:`klcontrol.analysis.identification.frequency.critical_gain_interval` on the logs at ``paths``; where
    ``model`` (:func:`critical_gains`' result) is given, ``agrees`` says whether its critical Ki lies in the
    measured interval.

    Returns
    -------
    dict
        ratio (``"%g"``) → ``{"ki", "interval", "period", "agrees"}`` (``None`` entries when nothing crosses).
    """
    from klcontrol.analysis.identification.frequency import critical_gain_interval
    from klcontrol.analysis.identification.traces import aligned, read_trace

    traces = [aligned(read_trace(p), where=str(p)) for p in paths]
    out = {}
    for r in ratios:
        c = critical_gain_interval(traces, beta_star, r, window=window, delay=delay, controller=controller)
        key = f"{r:g}"
        if c is None:
            out[key] = dict(ki=None, interval=None, period=None, agrees=None)
            continue
        m = (model or {}).get(key, {}).get("ki")
        lo, hi = c["interval"]
        off = None if m is None else (0.0 if lo <= m <= hi else (lo / m - 1 if m < lo else m / hi - 1))
        # Within the interval widened by MEASURED_TOLERANCE: the accuracy of a describing-function or spectral
        # estimate (docs/your_vae.md); beyond it the model misses what the data show.
        agrees = None if model is None else (off is not None and off <= MEASURED_TOLERANCE)
        out[key] = dict(ki=c["ki"], interval=c["interval"], period=c["period"], agrees=agrees,
                        model_ki=m, model_outside=off)
    return out


def format_measured(meas: dict, n_runs: int) -> str:
    """Lines of text for :func:`measured_critical_gains`."""
    lines = []
    for r, c in meas.items():
        if c["ki"] is None:
            lines.append(f"measured ({n_runs} excitation runs): no crossing on Kp = {r}·Ki")
            continue
        lo, hi = c["interval"]
        if c["agrees"] is None:
            flag = ""
        elif c["agrees"]:
            flag = "; the fit agrees" + ("" if not c["model_outside"] else
                                         f" ({100 * c['model_outside']:.0f} % outside the interval, within tolerance)")
        else:
            off = "the fit finds none" if c["model_ki"] is None else f"the fit's {c['model_ki']:.3g} is " \
                f"{100 * c['model_outside']:.0f} % outside"
            flag = f"; DISAGREES ({off}): do not trust the fit's verdicts near the boundary"
        lines.append(f"measured ({n_runs} excitation runs, frequency response, no model): critical Ki on Kp = {r}·Ki "
                     f"{c['ki']:.3g} [{lo:.3g}, {hi:.3g}], period {c['period']:.3g} updates{flag}")
    return "\n".join(lines)


def format_critical(crit: dict) -> str:
    """Lines of text for :func:`critical_gains`."""
    lines = []
    for r, c in crit.items():
        if c["ki"] is None:
            lines.append(f"critical gain on Kp = {r}·Ki: none up to Ki = 100 on the {c['plants']} checked plants")
            continue
        per = f", oscillation period {c['period']:.3g} updates" if c["period"] else ", a real root (no oscillation)"
        spread = "" if c["range"][1] <= c["range"][0] * (1 + 1e-9) else \
            f"; {c['range'][0]:.4g} … {c['range'][1]:.4g} over the {c['plants']} checked plants"
        lines.append(f"critical gain on Kp = {r}·Ki: Ki = {c['ki']:.4g} (Kp = {c['kp']:.4g}){per}{spread}")
    return "\n".join(lines)


def format_verdict(out: dict) -> str:
    """The verdict of :func:`check_fit_file` as lines of text."""
    head = (f"{'STABLE' if out['stable'] else 'NOT robustly stable'}: {out['controller']} PI Kp={out['kp']:g}, "
            f"Ki={out['ki']:g}, T={out['window']}, delay={out['delay']}")
    if out["fit_kind"] == "first_order":
        lines = [head, f"over β ∈ [{out['beta_range'][0]:g}, {out['beta_range'][1]:g}]: g′ ∈ "
                 f"[{out['gprime_range'][0]:.4g}, {out['gprime_range'][1]:.4g}]"
                 + (" (widened to the confidence band)" if out["widened_to_ci"] else "")]
        for r in out["per_a"]:
            lines.append(f"  a = {r['a']:.4g}: {'stable' if r['stable'] else 'unstable'}, worst spectral radius "
                         f"{r['worst_spectral_radius']:.9f} at g′ = {r['worst_gprime']:.4g}, gain margin "
                         f"{r['gain_margin']:.4g}")
            if r.get("stable_gprime_range") is not None:
                lo, hi = r["stable_gprime_range"]
                lines.append(f"    stable g′ range ({lo:.4g}, {hi:.4g})")
        return "\n".join(lines)
    sps = out["setpoints"]
    lines = [head + f" on the {out['fit_kind']} fit",
             f"over {len(sps)} operating points C ∈ [{min(sps):.4g}, {max(sps):.4g}]"
             + (" and their bootstrap draws" if out["draws_included"] else "")
             + f": {out['n_stable']} of {out['n_plants']} linearisations stable",
             f"  worst spectral radius {out['worst_spectral_radius']:.9f} ({out['worst_plant']}), "
             f"gain margin {out['gain_margin']:.4g}"]
    if not out["stable"] and out.get("gain_range") is not None:
        lo, hi = out["gain_range"]
        lines.append(f"  stable on every linearisation for gain factors s in ({lo:.4g}, {hi:.4g}): (s·Kp, s·Ki)")
    return "\n".join(lines)


def check_plant_numbers(a, gprime, gprime_max=None) -> None:
    """Refuse the plausible mistakes in a first-order plant's numbers, naming the flag and the fix.

    ``a`` must be a positive rate (a value above 1 is warned about: the time constant ``1/a`` was probably typed);
    ``g′`` must be negative (the KL falls as β rises; the DynamicVAE paper's ``G`` is ``−g′``).
    """
    import warnings

    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"--a must be a positive, finite rate, got {a}")
    if a > 1:
        warnings.warn(f"--a {a:g} is a rate above 1 (a time constant 1/a under one update); the papers' rates are "
                      f"1/2500 and 1/5000: did you mean --a {1 / a:.3g}?", UserWarning, stacklevel=3)
    for flag, g in (("--gprime", gprime), ("--gprime-max", gprime_max)):
        if g is not None and not g < 0:
            raise ValueError(f"{flag} {g:g}: g′ < 0 (the KL falls as β rises); the paper's G is −g′: pass "
                             f"{flag} {-abs(g):g}" + ("" if g else " or a nonzero slope"))


def stability_verdict(kp, ki, a, gprime, gprime_max=None, window=1, delay=0, controller="incremental",
                      progress=None) -> dict:
    """Verdict, spectral radius and margins of the linearised first-order loop (``klcontrol stability``).

    Parameters
    ----------
    kp, ki : float
        Gains.
    a : float
        Plant rate, > 0.
    gprime, gprime_max : float
        Slope g′(β*), or with ``gprime_max`` the interval every g′ of which must be stable.
    window, delay, controller
        Loop configuration.
    progress : callable, optional
        ``progress(message)`` for the stages of a long derivation (windows without shipped code).

    Returns
    -------
    dict
        JSON-able: ``stable``, ``spectral_radius`` at ``gprime``, the worst case over the interval, the gain
        margin and range, the stable g′ range and every crossing.
    """
    from klcontrol.analysis.stability import robust_stability, spectral_radius
    from klcontrol.analysis.stability.codegen import coefficient_functions

    if int(window) < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    for name, v in (("kp", kp), ("ki", ki), ("a", a), ("gprime", gprime)):
        if not math.isfinite(v):
            raise ValueError(f"--{name} must be finite")
    check_plant_numbers(a, gprime, gprime_max)
    cfg = dict(window=window, delay=delay, controller=controller)
    # Derive (or load) the generated code first, so a long derivation reports its stages.
    coefficient_functions(controller, window, delay, progress=progress)
    res = robust_stability(kp, ki, a, gprime, gprime_max, **cfg)
    return {
        "stable": res.stable,
        "spectral_radius": spectral_radius(kp, ki, a, gprime, **cfg),
        "worst_spectral_radius": res.worst_spectral_radius,
        "worst_gprime": res.worst_gprime,
        "gain_margin": res.gain_margin,
        "gain_range": res.gain_range,
        "stable_gprime_range": res.stable_gprime_range,
        "crossings": [c.gprime for c in res.crossings],
        "gprime_interval": [res.gprime_min, res.gprime_max],
        "kp": kp, "ki": ki, "a": a, "gprime": gprime, "interval_given": gprime_max is not None, **cfg,
    }


def format_stability(out: dict) -> str:
    """The verdict of :func:`stability_verdict` as lines of text."""
    lo_g, hi_g = out["gprime_interval"]
    interval = f"every g′ in [{lo_g:g}, {hi_g:g}]" if out["interval_given"] else f"g′ = {out['gprime']:g}"
    lines = [f"{'STABLE' if out['stable'] else 'UNSTABLE'} for {interval} ({out['controller']} PI, "
             f"Kp={out['kp']:g}, Ki={out['ki']:g}, a={out['a']:g}, T={out['window']}, delay={out['delay']})",
             f"spectral radius {out['spectral_radius']:.9f} at g′ = {out['gprime']:g}; worst "
             f"{out['worst_spectral_radius']:.9f} at g′ = {out['worst_gprime']:g}"]
    if out["stable"]:
        lines.append(f"gain margin: (Kp, Ki) may be scaled together by up to {out['gain_margin']:.6g}")
    elif out["gain_range"] is not None:
        lines.append(f"robustly stable for gain factors in ({out['gain_range'][0]:.6g}, {out['gain_range'][1]:.6g})")
    if out["stable_gprime_range"] is not None:
        lo, hi = out["stable_gprime_range"]
        lines.append(f"stable g′ range: ({lo:.6g}, {hi:.6g})")
    else:
        lines.append("no g′ makes these gains stable")
    return "\n".join(lines)
