"""What ``klcontrol tune`` recommends: the linear design (:func:`klcontrol.analysis.tuning.design.tune`) or the
whole-run design (:func:`klcontrol.analysis.tuning.schedule.tune_schedule`) for a saved fit or a plant."""
from __future__ import annotations

import numpy as np

from klcontrol.analysis.tuning.design import PAPER_GAINS, tune
from klcontrol.analysis.tuning.schedule import tune_schedule

__all__ = ["design_gains", "MAX_SETTLING"]

#: Updates within which a recommended linear design must settle (2 %): longer than the paper's whole dSprites run
#: (800 000 updates), a design is no design; ``tune`` refuses it and names ``--beta-range``.
MAX_SETTLING = 1_000_000

def design_gains(*, fit=None, a=None, gprime=None, beta_range=None, allow_unidentified: bool = False,
                 window: int = 1, delay: int = 0, controller: str = "incremental", settling: float | None = None,
                 max_overshoot: float = 0.05, compare=PAPER_GAINS, schedule_steps: int | None = None,
                 compress: bool = True, beta0: float | None = None, noise_std: float = 0.5,
                 max_jitter: float | None = None, max_overshoot_nats: float = 1.0, plot=None):
    """Gains for a saved fit (or for ``a`` and a g′ range): what ``klcontrol tune`` does, in one call.

    Without ``schedule_steps``: the linear design :func:`tune` over the g′ range the fit takes on
    ``beta_range``; with it: :func:`klcontrol.analysis.tuning.schedule.tune_schedule` over DynamicVAE's step-ramp
    run for ``schedule_steps`` updates (compressed to them unless ``compress`` is false).

    Parameters
    ----------
    fit : str or path, optional
        ``fit.json`` of ``klcontrol fit`` (first order).
    a : float, optional
        Plant rate, with ``gprime`` (one value or ``(min, max)``) instead of a fit.
    beta_range : (float, float), optional
        β range the schedule visits (default: the fitted traces').
    allow_unidentified : bool
        Design on a fit that does not identify the plant (its problems are returned) instead of raising.
    window, delay, controller, settling, max_overshoot
        As in :func:`tune`.
    compare : (float, float)
        Reference gains reported beside the design (default: the paper's).
    schedule_steps, compress, beta0, noise_std, max_jitter, max_overshoot_nats
        Schedule tuning (:func:`klcontrol.analysis.tuning.schedule.tune_schedule`; β(0) default DynamicVAE's).
    plot : str or path, optional
        PNG of the simulated responses of the design and the reference on the fitted plant
        (:func:`klcontrol.analysis.stability.plots.tuned_response_figure`).

    Returns
    -------
    (TuneResult or ScheduleTuneResult, list of str)
        The design and the fit's problems (empty unless ``allow_unidentified`` let them pass).

    Raises
    ------
    klcontrol.analysis.verdicts.fits.Unidentified
        The fit does not identify the plant over the β range and ``allow_unidentified`` is false.
    ValueError
        Bad arguments, naming them.
    """
    from klcontrol.analysis.verdicts.fits import Unidentified
    from klcontrol.papers import DYNAMICVAE_BETA0, DYNAMICVAE_DSPRITES_STEPS
    from klcontrol.setpoints import StepRamp

    beta0 = DYNAMICVAE_BETA0 if beta0 is None else beta0
    problems, plant = [], None
    if fit is not None:
        from klcontrol.analysis.identification.first_order import PlantFit
        from klcontrol.analysis.identification.fits import load_fit

        plant = load_fit(fit)
        if not isinstance(plant, PlantFit):
            raise ValueError(f"{fit}: not a first-order fit ({type(plant).__name__}): tuning needs the g′ band and "
                             "the interval of a that `klcontrol fit --out` records")
        lo, hi = beta_range or plant.beta_range
        if not hi >= lo:
            raise ValueError(f"--beta-range needs LO ≤ HI, got {lo}, {hi}")
        problems = list(plant.design_problems(lo, hi))
        if problems and not allow_unidentified:
            raise Unidentified(fit, problems)
        a, g = plant.a, tuple(plant.gprime_range(lo, hi))
    elif a is None or gprime is None:
        raise ValueError("give --fit fit.json, or --a and --gprime")
    else:
        from klcontrol.analysis.verdicts.fits import check_plant_numbers

        g = tuple(float(v) for v in np.ravel(gprime))
        if len(g) not in (1, 2):
            raise ValueError("--gprime takes one value or two (g′min g′max)")
        check_plant_numbers(float(a), g[0], g[1] if len(g) == 2 else None)
        g = g[0] if len(g) == 1 else g
    ref = None if compare is None else {"paper" if tuple(compare) == tuple(PAPER_GAINS) else "yours": tuple(compare)}
    if (schedule_steps is not None or plot) and plant is None:
        raise ValueError(f"{'--plot' if plot else '--schedule-steps'} simulates the fitted plant: give --fit fit.json")
    sp = StepRamp.dynamicvae_dsprites()
    if schedule_steps is None:
        result = tune(a=a, gprime=g, window=window, delay=delay, controller=controller, settling=settling,
                      max_overshoot=max_overshoot, compare=ref)
        if not result.figures.settling_steps <= MAX_SETTLING:
            lo, hi = (g, g) if np.ndim(g) == 0 else g
            raise ValueError(
                f"no design settles within a run: the best one (Kp {result.kp:.4g}, Ki {result.ki:.4g}) takes "
                f"{result.figures.settling_steps:.3g} updates to settle (ρ {result.figures.worst_spectral_radius:.6f}) "
                f"because g′ reaches {hi:.3g} nats per unit β, nearly 0, in the range designed for ([{lo:.3g}, "
                f"{hi:.3g}]); narrow it to where the loop will run: --beta-range LO HI around the operating point "
                "(or --gprime)")
        steps, y0, noise = 60_000, 0.0, dict(noise_rel=0.03)
    else:

        if schedule_steps < 2:
            raise ValueError(f"--schedule-steps must be ≥ 2, got {schedule_steps}")
        if controller != "incremental":
            raise ValueError("schedule tuning designs DynamicVAE's incremental PI; drop --controller "
                             f"{controller} or --schedule-steps")
        if compress:
            sp = sp.compressed(DYNAMICVAE_DSPRITES_STEPS / schedule_steps)
        result = tune_schedule(plant, sp, schedule_steps, gprime=g, beta0=beta0, window=window, delay=delay,
                               noise_std=noise_std, max_overshoot=max_overshoot_nats, max_jitter=max_jitter,
                               compare=ref)
        steps, y0, noise = schedule_steps, 0.5, dict(noise_std=noise_std)
    if plot:
        from klcontrol.analysis.stability.plots import tuned_response_figure

        tuned_response_figure(result, plant, sp, steps, path=plot, controller=controller, beta0=beta0, y0=y0,
                              reference=compare, **noise)
    return result, problems
