"""Validation for control: score candidate models on what a stability verdict depends on.

A β controller sees the KL through its moving average (a few updates) and turns unstable at the frequency where
its loop's phase reaches −180°: on the real VAEs a period of 30–70 updates, where the plant rings. A 50-update
mean averages that ring away, so a model can win on 50-update means and still put the critical gain 4× off
(docs/identification.md). Two figures replace it here:

* **time scale**: the held-out NRMSE fit % of the KL's moving mean over the controller's own window
  (:func:`control_fit_percent`);
* **loop band**: each model's small-signal frequency response against the nonparametric (Welch) estimate from the
  open-loop excitation runs, over the band around the measured phase crossover (periods from half to twice the
  measured critical period on the integral ray), in units of the estimate's own standard error
  (:func:`band_statistic`). The standard error of a Welch estimate averaged over ``n`` segments with coherence
  ``γ²`` is ``|P|·√((1 − γ²)/(n·γ²))`` for the complex error (Bendat & Piersol), so a model that is right has an
  RMS of about 1; :data:`BAND_LIMIT` (2) rejects a model whose response is off by more than twice the noise
  on average over the band — as one that misses the ring is.

The rule (:func:`rank_candidates`): models that fail the band test cannot win; among those that pass, the highest
time-scale fit %, the fewest parameters within :data:`TIE` points. If none passes, the one closest in the band
wins, flagged. The **model set** is every passing candidate within :data:`SET_TOLERANCE` points of the best; a
verdict over it (:mod:`klcontrol.analysis.verdicts.model_set`) adds each member's parameter draws.
"""
from __future__ import annotations

import math

import numpy as np

from klcontrol.analysis.identification.models import (
    excitation_levels,
    fit_dynamics,
    fit_oe_orders,
    fit_percent,
    validate,
)

__all__ = ["BAND_LIMIT", "SET_TOLERANCE", "TIE", "select_model", "LoopBand", "open_loop_traces", "loop_band", "band_statistic",
           "control_fit_percent", "rank_candidates"]

#: RMS of the band error in standard errors above which a candidate is rejected.
BAND_LIMIT = 2.0
#: Time-scale fit % (points) below the best within which a passing candidate belongs to the model set.
SET_TOLERANCE = 5.0
#: Points within which the simpler candidate wins.
TIE = 0.5
#: Relative standard error floor (a Welch estimate is never better than this, whatever its coherence).
SE_FLOOR = 0.05


class LoopBand:
    """The measured response over the loop band: frequencies, response, relative standard error.

    Attributes
    ----------
    freqs : ndarray
        Cycles per update.
    response : ndarray of complex
        Welch estimate ``P(e^{2πif})``.
    rel_se : ndarray
        Relative standard error of ``response`` (complex error).
    beta_star : float
        Operating point of the excitation.
    critical_period : float or None
        Measured critical period on the integral ray (updates) the band is centred on.
    """

    def __init__(self, freqs, response, rel_se, beta_star, critical_period):
        self.freqs, self.response, self.rel_se = freqs, response, rel_se
        self.beta_star, self.critical_period = float(beta_star), critical_period

    def to_dict(self) -> dict:
        """JSON-able form (:meth:`from_dict` reads it back)."""
        return dict(beta_star=self.beta_star, critical_period=self.critical_period,
                    freqs=[float(f) for f in self.freqs], response_re=[float(x.real) for x in self.response],
                    response_im=[float(x.imag) for x in self.response], rel_se=[float(x) for x in self.rel_se])

    @classmethod
    def from_dict(cls, d: dict) -> "LoopBand":
        """Rebuild from :meth:`to_dict`."""
        try:
            resp = np.asarray(d["response_re"], dtype=float) + 1j * np.asarray(d["response_im"], dtype=float)
            return cls(np.asarray(d["freqs"], dtype=float), resp, np.asarray(d["rel_se"], dtype=float),
                       float(d["beta_star"]), d.get("critical_period"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a loop band description ({exc})") from None

    def accepts(self, fit) -> bool:
        """Whether ``fit`` passes the band test (:data:`BAND_LIMIT`)."""
        z = band_statistic(fit, self)
        return bool(np.isfinite(z) and z <= BAND_LIMIT)


def open_loop_traces(traces):
    """The open-loop excitation traces among ``traces`` and their common operating point.

    An open-loop excitation has no set point logged (or only NaN) and β takes two or more values, its first one
    β* (the constant lead). Returns ``(list, beta_star)``; ``([], None)`` when there is none or they do not share
    one β*.
    """
    out = []
    for t in traces:
        sp = getattr(t, "setpoint", None)
        if sp is not None and np.any(np.isfinite(np.asarray(sp, dtype=float))):
            continue
        beta = np.asarray(t.beta, dtype=float)
        if len(beta) < 2 or np.all(beta == beta[0]):
            continue
        out.append(t)
    stars = {round(float(np.asarray(t.beta, dtype=float)[0]), 9) for t in out}
    if len(stars) != 1:
        return [], None
    return out, float(stars.pop())


def loop_band(traces, beta_star, window: int = 5, nperseg: int = 256):
    """The :class:`LoopBand` of open-loop excitation ``traces`` at ``beta_star`` (``None`` if too short).

    Parameters
    ----------
    traces : sequence of Trace
        Open-loop runs at ``beta_star`` (canonical rows, every update logged).
    window : int
        The controller's moving-average window (it shifts the loop's crossover).
    nperseg : int
        Welch segment length (half of it when no run is that long).
    """
    from klcontrol.analysis.identification.frequency import frequency_response
    from klcontrol.analysis.stability.critical import critical_gain_from_response

    fr = None
    for seg in (int(nperseg), int(nperseg) // 2):  # short runs: half the segment rather than no band at all
        try:
            fr = frequency_response(traces, beta_star, seg)
            break
        except ValueError:
            continue
    if fr is None:
        return None
    c = critical_gain_from_response(fr.freqs, fr.response, 0.0, window=window)
    period = None if c is None else float(c.period)
    lo, hi = (0.5 / period, 2.0 / period) if period else (1 / 200, 1 / 10)
    keep = (fr.freqs >= lo) & (fr.freqs <= min(hi, 0.5))
    if keep.sum() < 2:
        return None
    coh = np.clip(fr.coherence[keep], 1e-6, 1.0)
    se = np.maximum(np.sqrt((1 - coh) / (fr.segments * coh)), SE_FLOOR)
    return LoopBand(fr.freqs[keep], fr.response[keep], se, beta_star, period)


def band_statistic(fit, band: LoopBand) -> float:
    """RMS over the band of ``|P_model − P_measured| / (|P_measured|·se)``: about 1 for a right model."""
    pm = np.asarray(fit.frequency_response(band.freqs, beta_star=band.beta_star), dtype=complex)
    z = np.abs(pm - band.response) / (np.abs(band.response) * band.rel_se)
    return float(np.sqrt(np.mean(z ** 2)))


def control_fit_percent(fit, traces, window: int = 5):
    """Held-out NRMSE fit % of the KL's moving mean over the controller's ``window``, per trace."""
    return [fit_percent(np.asarray(t.kl, dtype=float), np.asarray(fit.predict(t), dtype=float), int(window))
            for t in traces]


def rank_candidates(cands, held_out, band_traces, window: int = 5):
    """Score candidates for control and pick one (see the module docstring).

    Parameters
    ----------
    cands : sequence of HammersteinFit
    held_out : sequence of Trace
        Traces none of the candidates was fitted on (the time-scale score; without them, the fitted traces'
        figures are not used and only the band decides).
    band_traces : sequence of Trace
        Traces to look for open-loop excitations in (the fitted and held-out ones).
    window : int
        The controller's moving-average window.

    Returns
    -------
    chosen : int
        Index of the chosen candidate.
    report : list of dict
        Per candidate: ``band_rms`` (None without a band), ``passes_band``, ``control_fit_percent`` (per held-out
        trace), ``control_score`` (their mean), ``ring_period`` (updates, None without a complex pole pair).
    summary : dict
        ``rule``, ``band`` (:meth:`LoopBand.to_dict` or None), ``model_set`` (indices), ``warning`` (or None).
    """
    ol, beta_star = open_loop_traces(band_traces)
    band = loop_band(ol, beta_star, window) if ol else None
    rep = []
    for m in cands:
        z = band_statistic(m, band) if band is not None else None
        fits = control_fit_percent(m, held_out, window) if held_out else []
        rep.append(dict(band_rms=z, passes_band=None if z is None else bool(z <= BAND_LIMIT),
                        control_fit_percent=fits, control_score=float(np.mean(fits)) if fits else None,
                        ring_period=_ring_period(m)))
    passing = [i for i, r in enumerate(rep) if r["passes_band"] is not False]
    warning = None
    if not passing:
        best_z = min(range(len(rep)), key=lambda i: rep[i]["band_rms"])
        warning = (f"no candidate matches the measured frequency response in the loop band (best RMS "
                   f"{rep[best_z]['band_rms']:.2g} standard errors > {BAND_LIMIT:g}): verdicts near the boundary "
                   f"should rest on the measured response and the relay, not on this model")
        return best_z, rep, dict(rule=_RULE, band=band.to_dict(), model_set=[best_z], warning=warning)
    if held_out:
        top = max(rep[i]["control_score"] for i in passing)
        near = [i for i in passing if rep[i]["control_score"] >= top - TIE]
        chosen = min(near, key=lambda i: (cands[i].info.get("n_params", 0), -rep[i]["control_score"]))
        members = [i for i in passing if rep[i]["control_score"] >= top - SET_TOLERANCE]
    else:
        chosen = min(passing, key=lambda i: cands[i].info.get("aic", math.inf))
        members = list(passing)
    if band is None:
        warning = "no open-loop excitation run long enough for the loop-band test: scored on the time scale only"
    return chosen, rep, dict(rule=_RULE, band=None if band is None else band.to_dict(), model_set=members,
                             warning=warning)


_RULE = (f"validation for control: a candidate whose small-signal frequency response is more than {BAND_LIMIT:g} "
         "standard errors (RMS) from the measured one over the loop band (periods ½–2× the measured critical period) "
         "cannot win; among the rest, the highest held-out fit % of the KL's moving mean over the controller's "
         f"window, the fewest parameters within {TIE:g} points; the model set: every passing candidate within "
         f"{SET_TOLERANCE:g} points (docs/identification.md)")


def _ring_period(fit):
    p = [x for x in np.atleast_1d(fit.poles) if abs(np.imag(x)) > 1e-12]
    if not p:
        return None
    return float(2 * np.pi / abs(np.angle(p[0])))


def select_model(fit_traces, g, held_out=(), fit_names=None, held_out_names=None, max_nf: int = 3,
                 drift: bool = False, free_betas=None, window: int = 5):
    """Fit every structure and choose the one that is right for control.

    The rule is :func:`rank_candidates`: a candidate whose
    frequency response misses the measured one in the loop band (the open-loop excitations among the fitted and
    held-out traces) cannot win; among the rest, the best held-out fit of the KL at the controller's own time scale
    (moving mean over ``window``), the fewest parameters within a tie. Without held-out traces, the least AIC
    among those passing the band test.

    Parameters
    ----------
    fit_traces : sequence of Trace
        Data to estimate from.
    g : Gain
        Static map.
    held_out : sequence of Trace
        Traces not used for fitting.
    max_nf : int
        Largest OE denominator order tried (orders chosen by AIC).
    free_betas : sequence of float, optional
        See :func:`~klcontrol.analysis.identification.models.fit_dynamics`; default :func:`~klcontrol.analysis.identification.models.excitation_levels` of the fit traces.
    window : int
        The controller's moving-average window (the time scale the KL is scored at).

    Returns
    -------
    best : HammersteinFit
        With ``info["selection"]`` (the rule, each candidate's figures) and ``info["model_set"]`` (the candidates
        the data do not reject, as :meth:`~klcontrol.analysis.identification.models.HammersteinFit.to_dict` without their ``info``, each with its
        covariance).
    report : dict
        ``candidates``: per structure its parameters, AIC, fitted and held-out figures (:func:`~klcontrol.analysis.identification.models.validate`) and
        the control figures; ``oe_orders``: the AIC table; ``chosen``; ``rule``; ``band``; ``model_set``;
        ``warning``.
    """
    fit_traces = list(fit_traces)
    if free_betas is None:
        free_betas = excitation_levels(fit_traces, g)
    cands = [fit_dynamics(fit_traces, g, "first_order", drift=drift, names=fit_names, free_betas=free_betas),
             fit_dynamics(fit_traces, g, "two_time_constant", drift=drift, names=fit_names, free_betas=free_betas)]
    # Every OE order is a candidate: the least-AIC order can miss the ring another order keeps.
    _, table, oes = fit_oe_orders(fit_traces, g, max_nf, drift, fit_names, free_betas, all_models=True)
    cands += oes
    held_out = list(held_out)
    rep = []
    for m in cands:
        v = validate(m, held_out, held_out_names) if held_out else []
        rep.append(dict(structure=m.structure, orders=m.orders, params=m.params, aic=m.info["aic"],
                        time_constants=m.time_constants, fit_percent_fitted=m.info["fit_percent_fitted"],
                        held_out=v, held_out_min=min((x["fit_percent"] for x in v), default=None)))
    i, control, summary = rank_candidates(cands, held_out, fit_traces + held_out, window)
    for r, c in zip(rep, control):
        r.update(c)
        r["score"] = c["control_score"]
    best = cands[i]
    members = []
    for j in summary["model_set"]:
        d = cands[j].to_dict()
        info = d.pop("info")
        d["info"] = {k: info.get(k) for k in ("theta", "theta_cov", "n_params", "aic", "beta_range")}
        members.append(d)
    best.info["selection"] = dict(rule=summary["rule"], warning=summary["warning"], band=summary["band"],
                                  window=int(window),
                                  candidates=[dict(structure=r["structure"], orders=r["orders"], aic=r["aic"],
                                                   held_out_min=r["held_out_min"], score=r["score"],
                                                   band_rms=r["band_rms"], passes_band=r["passes_band"],
                                                   ring_period=r["ring_period"]) for r in rep])
    best.info["model_set"] = members
    return best, dict(candidates=rep, oe_orders=table, chosen=i, rule=summary["rule"], band=summary["band"],
                      model_set=summary["model_set"], warning=summary["warning"])
