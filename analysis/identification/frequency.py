"""The plant's frequency response measured from excitation runs, and the critical gains it implies (no model).

A parametric model can miss the plant's ring (docs/your_vae.md: on the MNIST plant the model the first selection
rule chose did, and predicted the stability boundary 4–7× too high). The open-loop
excitation runs measure the response directly: Welch's cross-spectral estimate ``P(f) = S_uy(f) / S_uu(f)`` with
``u = β − β*`` and ``y`` the detrended KL, pooled over the runs, with its magnitude-squared coherence. The
critical gain on a ray then follows from the Nyquist crossing of the controller times ``P``
(:func:`klcontrol.analysis.stability.critical.critical_gain_from_response`); its spread over segment lengths and
over left-out runs is the interval reported, because no single spectral resolution is right for every plant.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrequencyResponse", "frequency_response", "critical_gain_interval", "SEGMENTS"]

#: Welch segment lengths (updates) tried: short segments average more, long ones resolve a sharper ring.
SEGMENTS = (128, 256, 512)


@dataclass(frozen=True)
class FrequencyResponse:
    """A measured frequency response β → KL.

    Attributes
    ----------
    freqs : ndarray
        Cycles per update, ``(0, 0.5]``.
    response : ndarray of complex
        ``P(e^{2πif})`` (nats per unit β).
    coherence : ndarray
        Magnitude-squared coherence (1: the KL at that frequency is all explained by β).
    segments : int
        Averaged Welch segments.
    """

    freqs: np.ndarray
    response: np.ndarray
    coherence: np.ndarray
    segments: int


def _excited_part(trace, beta_star):
    from klcontrol.analysis.identification.traces import log_convention

    conv = log_convention(trace)
    if conv["kl_lag"] or conv["beta_lead"]:
        raise ValueError("frequency_response takes canonical rows: pass klcontrol.analysis.identification.aligned(trace)")
    if np.any(np.diff(np.asarray(trace.step)) != 1):
        raise ValueError("frequency_response needs every update logged (step spacing 1)")
    beta = np.asarray(trace.beta, dtype=float)
    kl = np.asarray(trace.kl, dtype=float)
    moves = np.flatnonzero(np.diff(beta) != 0)
    start = int(moves[0]) + 1 if len(moves) else len(beta)  # the lead at β* carries no excitation
    return beta[start:] - beta_star, kl[start:]


def frequency_response(traces, beta_star: float, nperseg: int = 256) -> FrequencyResponse:
    """Welch estimate of the plant's response from open-loop excitation runs at one operating point.

    Parameters
    ----------
    traces : sequence of klcontrol.Trace
        Open-loop runs around ``beta_star`` (every update logged, canonical convention); the constant-β lead of
        each is dropped.
    beta_star : float
        The operating point.
    nperseg : int
        Welch segment length (Hann window, half overlap).

    Returns
    -------
    FrequencyResponse
    """
    from scipy import signal

    suu = suy = syy = 0.0
    n = 0
    for tr in traces:
        u, y = _excited_part(tr, float(beta_star))
        if len(u) < nperseg:
            continue
        y = signal.detrend(y)
        f, puu = signal.csd(u, u, nperseg=nperseg)
        _, puy = signal.csd(u, y, nperseg=nperseg)
        _, pyy = signal.csd(y, y, nperseg=nperseg)
        suu, suy, syy = suu + puu.real, suy + puy, syy + pyy.real
        n += max(1, 2 * len(u) // nperseg - 1)
    if n == 0:
        raise ValueError(f"no excitation run is longer than a segment of {nperseg} updates")
    keep = f > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        resp = suy / suu
        coh = np.abs(suy) ** 2 / (suu * syy)
    return FrequencyResponse(f[keep], resp[keep], np.nan_to_num(coh[keep]), n)


def critical_gain_interval(traces, beta_star: float, ratio: float, *, window: int = 1, delay: int = 0,
                           controller: str = "incremental", segments=SEGMENTS) -> dict | None:
    """The critical ``Ki`` on the ray ``Kp = ratio·Ki`` from measured responses: point value and spread.

    Evaluated for every Welch segment length in ``segments`` and, with two or more runs, with each run left out;
    the interval is the range of those estimates, the point value their median.

    Returns
    -------
    dict or None
        ``ki``, ``interval`` [lo, hi], ``period`` (median, updates), ``estimates`` (each ``segments, left_out, ki,
        period``); ``None`` when no estimate crosses (no instability seen on the ray).
    """
    from klcontrol.analysis.stability.critical import critical_gain_from_response

    traces = list(traces)
    drops = [None] + (list(range(len(traces))) if len(traces) > 1 else [])
    est = []
    for seg in segments:
        for d in drops:
            use = [t for i, t in enumerate(traces) if i != d]
            try:
                fr = frequency_response(use, beta_star, seg)
            except ValueError:
                continue
            c = critical_gain_from_response(fr.freqs, fr.response, ratio, window=window, delay=delay,
                                            controller=controller)
            if c is not None:
                est.append(dict(segments=seg, left_out=d, ki=c.ki, period=c.period))
    if not est:
        return None
    ks = np.array([e["ki"] for e in est])
    return dict(ki=float(np.median(ks)), interval=[float(ks.min()), float(ks.max())],
                period=float(np.median([e["period"] for e in est])), estimates=est)
