"""A verdict over what the data allow: every model the data do not reject, with its parameter uncertainty.

``klcontrol fit --model hammerstein`` keeps, beside the chosen model, the **model set**: every candidate that
matches the measured frequency response in the loop band and predicts the held-out KL at the controller's time
scale within :data:`~klcontrol.analysis.identification.control_validation.SET_TOLERANCE` points of the best
(:func:`~klcontrol.analysis.identification.control_validation.select_model`). Each member brings parameter draws
from its estimator's covariance (:meth:`~klcontrol.analysis.identification.models.HammersteinFit.parameter_draws`),
so the set stands for structural and parameter uncertainty at once; a draw whose frequency response fails the
loop-band test the members passed (:meth:`~klcontrol.analysis.identification.control_validation.LoopBand.accepts`)
is rejected by the same data and left out.

Over the pooled plants (members × draws, each at every operating point checked), a gain pair is **stable** when at
least :data:`DECIDE` of them are stable, **unstable** when at most ``1 − DECIDE`` are, and **undecided** otherwise;
the critical gain on a ray is the interval between the 2.5 % and 97.5 % quantiles of the plants' critical gains,
its median the point value (never reported alone). A relay run (:func:`~klcontrol.analysis.identification.relay.relay_from_file`)
is reported beside it, with a flag where it falls outside the interval widened by
:data:`~klcontrol.analysis.verdicts.fits.MEASURED_TOLERANCE`.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DECIDE", "DRAWS", "set_members", "set_responses", "set_verdict", "set_critical_gains", "plant_critical_gains", "relay_beside", "format_set",
           "condition_on_relay", "MIN_CONDITIONED"]

#: Fraction of the set's plants that must agree for a stable or unstable verdict.
DECIDE = 0.95
#: Parameter draws per member.
DRAWS = 100
#: Fewest plants a relay-conditioned set keeps (:func:`condition_on_relay`); with fewer the set is left whole.
MIN_CONDITIONED = 20
#: Frequency grid (cycles per update) on which the set's critical gains are found.
_FREQS = np.concatenate([np.geomspace(1e-4, 0.01, 200, endpoint=False), np.linspace(0.01, 0.5, 2000)])


def set_members(fit, draws: int = DRAWS, seed: int = 0):
    """The plants a fit's model set stands for: ``[(label, HammersteinFit)]``, members and their draws.

    A fit without a stored model set (an older file, or not a Hammerstein fit) stands for itself and its draws.
    """
    from klcontrol.analysis.identification.control_validation import LoopBand
    from klcontrol.analysis.identification.models import HammersteinFit

    info = getattr(fit, "info", None) or {}
    members = info.get("model_set")
    base = [HammersteinFit.from_dict(d) for d in members] if members else [fit]
    band = (info.get("selection") or {}).get("band")
    band = LoopBand.from_dict(band) if band and "freqs" in band else None
    out = []
    for i, m in enumerate(base):
        name = f"{m.structure}{'' if m.orders is None else tuple(m.orders)}"
        out.append((name, m))
        for j, d in enumerate(m.parameter_draws(draws, seed + i) if draws else []):
            if band is None or band.accepts(d):  # a draw the measured response rejects is not in the set
                out.append((f"{name}#{j}", d))
    return out


def _setpoints(fit, setpoints, beta_range):
    from klcontrol.analysis.stability.lti import operating_points

    return [float(c) for c in setpoints] if setpoints is not None else operating_points(fit, beta_range)


def _responses(fit, setpoints, beta_range, draws):
    """``[(label, [P(f) at each operating point])]`` over the model set, on :data:`_FREQS`."""
    plants = set_members(fit, draws)
    sps = _setpoints(fit, setpoints, beta_range)
    return [(lbl, [p.frequency_response(_FREQS, setpoint=c) for c in sps]) for lbl, p in plants], sps


def _critical(responses, ratio, window, delay, controller):
    """Per plant the smallest critical gain over its operating points (``inf``: none) and its period."""
    from klcontrol.analysis.stability.critical import controller_response, critical_gain_from_response

    k1 = controller_response(_FREQS, float(ratio), 1.0, window, delay, controller)
    ks, periods = [], []
    for _, resps in responses:
        best = None
        for resp in resps:
            cg = critical_gain_from_response(_FREQS, resp, float(ratio), controller_values=k1)
            if cg is not None and (best is None or cg.ki < best.ki):
                best = cg
        ks.append(math.inf if best is None else best.ki)
        periods.append(math.nan if best is None else best.period)
    return np.array(ks), np.array(periods)


def plant_critical_gains(responses, ratio, window=1, delay=0, controller="incremental"):
    """Per plant of the set, its critical ``Ki`` on the ray ``Kp = ratio·Ki`` and the period there.

    Parameters
    ----------
    responses : list
        The model set's responses, ``set_responses(fit, …)[0]``.

    Returns
    -------
    ks, periods : ndarray
        One entry per plant (``inf`` / NaN where it does not turn unstable on the ray).
    """
    return _critical(responses, ratio, window, delay, controller)


def condition_on_relay(responses, relay_ki: float, window=1, delay=0, controller="incremental", tolerance=None,
                       min_plants: int = MIN_CONDITIONED):
    """The model set's plants that agree with a relay run on the integral ray (the relay-conditioned set).

    The relay measures the real loop's critical ``Ki`` on ``Kp = 0`` without a model
    (:func:`klcontrol.analysis.identification.relay.relay_critical_gain`); a plant of the set whose own critical gain
    there lies outside ``relay_ki·(1 ± tolerance)`` is contradicted by that measurement and left out. The other rays'
    intervals are then taken over the plants kept. Fewer than ``min_plants`` kept (the relay disagrees with most of
    the set): the set is returned whole, and ``info["conditioned"]`` is False, so a disagreement is never hidden
    by a handful of plants.

    Parameters
    ----------
    responses : tuple
        ``set_responses(fit, …)``: the set's responses and operating points.
    relay_ki : float
        The relay's critical ``Ki`` on ``Kp = 0``.
    tolerance : float, optional
        Relative accuracy of the relay (default :data:`~klcontrol.analysis.identification.relay.RELAY_TOLERANCE`).

    Returns
    -------
    responses, info
        The kept responses (to pass as ``_responses_cache``) and ``{"conditioned", "kept", "plants", "relay_ki",
        "tolerance"}``.
    """
    from klcontrol.analysis.identification.relay import RELAY_TOLERANCE

    tol = RELAY_TOLERANCE if tolerance is None else float(tolerance)
    if not (relay_ki > 0 and math.isfinite(relay_ki)):
        raise ValueError(f"the relay's critical Ki must be positive and finite, got {relay_ki!r}")
    if not 0 < tol < 1:
        raise ValueError(f"the relay tolerance must be in (0, 1), got {tol!r}")
    resp, sps = responses
    ks, _ = _critical(resp, 0.0, window, delay, controller)
    keep = np.abs(ks / relay_ki - 1) <= tol
    info = dict(kept=int(keep.sum()), plants=len(ks), relay_ki=float(relay_ki), tolerance=tol)
    if keep.sum() < min_plants:
        return responses, dict(info, conditioned=False)
    return ([r for r, k in zip(resp, keep) if k], sps), dict(info, conditioned=True)


def set_critical_gains(fit, ratios, window=1, delay=0, controller="incremental", setpoints=None, beta_range=None,
                       draws: int = DRAWS, _responses_cache=None) -> dict:
    """Critical ``Ki`` on each ray over the model set: median and 95 % interval (see the module docstring).

    Per plant the smallest critical gain over the operating points counts (the one a design must stay below);
    a plant that does not turn unstable on the ray counts as ``inf``. The crossings are found on each plant's
    frequency response (:func:`klcontrol.analysis.stability.critical.critical_gain_from_response`).

    Returns
    -------
    dict
        ratio (``"%g"``) → ``{"ki", "interval": [lo, hi], "period", "plants"}`` (``ki`` None when most of the
        set never turns unstable on the ray; ``hi`` None when the upper quantile is unbounded).
    """
    responses, _ = _responses_cache or _responses(fit, setpoints, beta_range, draws)
    out = {}
    for r in ratios:
        ks, periods = _critical(responses, r, window, delay, controller)
        med = float(np.median(ks))
        if not math.isfinite(med):
            out[f"{r:g}"] = dict(ki=None, interval=None, period=None, plants=len(ks))
            continue
        lo, hi = (float(q) for q in np.quantile(ks, [0.025, 0.975]))
        out[f"{r:g}"] = dict(ki=med, interval=[lo, hi if math.isfinite(hi) else None],
                             period=float(np.nanmedian(periods)), plants=len(ks))
    return out


def set_verdict(fit, kp, ki, window=1, delay=0, controller="incremental", setpoints=None, beta_range=None,
                draws: int = DRAWS, _responses_cache=None) -> dict:
    """Stable / unstable / undecided for ``(kp, ki)`` over the model set (see the module docstring).

    A plant is stable at ``(kp, ki)`` when ``ki`` lies below its critical gain on the ray ``kp/ki`` at every
    operating point (for ``ki = 0``, when its closed loop's eigenvalues are inside the unit circle).

    Returns
    -------
    dict
        ``verdict``, ``fraction_stable``, ``plants``, ``members`` (structures), ``setpoints``,
        ``draws_per_member``.
    """
    responses, sps = _responses_cache or _responses(fit, setpoints, beta_range, draws)
    if ki > 0:
        ks, _ = _critical(responses, kp / ki, window, delay, controller)
        stable = ki < ks
    else:
        from klcontrol.analysis.stability.lti import robust_stability_lti

        plants = dict(set_members(fit, draws))
        stable = np.array([robust_stability_lti(kp, ki, [plants[lbl]], window, delay, controller, setpoints=sps,
                                                margins=False, draws=False).stable for lbl, _ in responses])
    frac = float(np.mean(stable))
    verdict = "stable" if frac >= DECIDE else "unstable" if frac <= 1 - DECIDE else "undecided"
    members = sorted({lbl.split("#")[0] for lbl, _ in responses})
    return dict(verdict=verdict, fraction_stable=frac, plants=len(responses), members=members, setpoints=sps,
                draws_per_member=int(draws))


def set_responses(fit, setpoints=None, beta_range=None, draws: int = DRAWS):
    """The model set's frequency responses, to pass as ``_responses_cache`` to several verdicts at once."""
    return _responses(fit, setpoints, beta_range, draws)


def relay_beside(relays, crit: dict) -> list:
    """Each relay estimate beside the set's interval on its ray: ``agrees`` within the measured tolerance."""
    from klcontrol.analysis.verdicts.fits import MEASURED_TOLERANCE

    out = []
    for r in relays:
        c = crit.get(f"{r['ratio']:g}")
        iv = None if not c or c["interval"] is None else c["interval"]
        agrees = None
        if iv is not None:
            lo, hi = iv[0] / (1 + MEASURED_TOLERANCE), (math.inf if iv[1] is None else iv[1] * (1 + MEASURED_TOLERANCE))
            agrees = bool(lo <= r["ki"] <= hi)
        out.append(dict(trace=r["trace"], ratio=r["ratio"], ki=r["ki"], period=r["period"], cycles=r["cycles"],
                        set_interval=iv, agrees=agrees))
    return out


def format_set(out: dict) -> str:
    """Lines of text for the ``model_set`` part of ``klcontrol check``'s result."""
    s = out["model_set"]
    v = s["verdict"]
    what = (f"no candidate passes the loop-band test; the closest, {', '.join(v['members'])}, stands in"
            if s.get("warning") else
            f"{len(v['members'])} model(s) the data do not reject: {', '.join(v['members'])}")
    lines = [f"model set ({what}; {v['draws_per_member']} parameter draws each; {v['plants']} plants): "
             f"{v['verdict'].upper()} ({100 * v['fraction_stable']:.0f} % of the plants stable)"]
    if s.get("warning"):
        lines.append(f"  WARNING (klcontrol fit): {s['warning']}")
    for r, c in (s.get("critical_gain") or {}).items():
        if c["ki"] is None:
            lines.append(f"  critical Ki on Kp = {r}·Ki: most of the set never turns unstable on this ray")
            continue
        hi = "∞" if c["interval"][1] is None else f"{c['interval'][1]:.3g}"
        lines.append(f"  critical Ki on Kp = {r}·Ki: {c['ki']:.3g} [{c['interval'][0]:.3g}, {hi}] (95 % of the set), "
                     f"period {c['period']:.3g} updates")
    for r in s.get("relay") or []:
        flag = "" if r["agrees"] is None else ("; agrees with the set" if r["agrees"] else
                                               "; DISAGREES with the set: trust neither near the boundary")
        lines.append(f"  relay (model-free, {r['trace']}): critical Ki on Kp = {r['ratio']:g}·Ki {r['ki']:.3g}, "
                     f"period {r['period']:.3g} updates ({r['cycles']} cycles){flag}")
    rc = s.get("relay_conditioned")
    if rc:
        if not rc["conditioned"]:
            lines.append(f"  relay-conditioned set: the relay confirms only {rc['kept']} of {rc['plants']} plants "
                         f"(within ±{100 * rc['tolerance']:.0f} %): too few, the set is left whole")
        else:
            v = rc["verdict"]
            lines.append(f"relay-conditioned set ({rc['kept']} of {rc['plants']} plants within "
                         f"±{100 * rc['tolerance']:.0f} % of the relay's {rc['relay_ki']:.3g} on Kp = 0): "
                         f"{v['verdict'].upper()} ({100 * v['fraction_stable']:.0f} % stable)"
                         + ("  <- the verdict (--relay-conditioned)" if rc.get("decides") else ""))
            for r, c in (rc.get("critical_gain") or {}).items():
                if c["ki"] is None:
                    continue
                hi = "∞" if c["interval"][1] is None else f"{c['interval'][1]:.3g}"
                lines.append(f"  critical Ki on Kp = {r}·Ki: {c['ki']:.3g} [{c['interval'][0]:.3g}, {hi}]")
    return "\n".join(lines)
