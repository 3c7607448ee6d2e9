"""The closed KL loop, one update, written once.

Order of one update ``t`` (docs/design.md, "The loop")::

    plant      y(t)  = plant.step(x_p, β(t))          the VAE trains one step with β(t)
    measure    kl(t) = y(t) + n(t)                     the KL logged after update t
    delay      m_in  = kl(t − d)                       d = 0 as trained, d = 1 the paper's Eq. 15
    filter+law β(t+1) = controller.advance(...)        moving average, then the controller's law

:func:`loop_step` is that sequence.  :func:`klcontrol.simulate` calls it with
NumPy arrays, :mod:`klcontrol.analysis.stability.symbolic` with sympy symbols to build
the linearised loop, and :meth:`klcontrol.Controller.step` runs the last stage
(``advance``) on the KL a real trainer measured — so the simulator, the
analysis and training share one order and one set of formulas.
"""
from __future__ import annotations

from dataclasses import dataclass

from .backend import NUMPY, Ops

__all__ = ["LoopState", "initial_loop_state", "loop_step", "measurement_noise", "summary_step", "SUMMARY_START"]


@dataclass(frozen=True)
class LoopState:
    """State of the closed loop before update ``t``.

    Attributes
    ----------
    plant : tuple
        The plant's state (:meth:`klcontrol.plant.Plant.step`).
    controller : dict
        The controller's law and filter state (:attr:`klcontrol.Controller.state`);
        ``controller["beta"]`` is β(t), the weight of update ``t``.
    delayed : tuple
        The measurements not yet consumed: ``()`` for delay 0, ``(kl(t − 1),)`` for delay 1.
    """

    plant: tuple
    controller: dict
    delayed: tuple = ()


def initial_loop_state(plant, controller_state: dict, y0, delay: int = 0, shape=()) -> LoopState:
    """The loop at rest before update 0: plant output ``y0``, measurement history ``y0``.

    Parameters
    ----------
    plant : Plant
        The plant model.
    controller_state : dict
        The controller's state (e.g. :attr:`Controller.state` after ``prime(y0)``).
    y0 : float or array
        KL before the first update.
    delay : {0, 1}
        Measurement delay.
    shape : tuple
        Shape of the loop arrays (several loops at once).

    Returns
    -------
    LoopState
    """
    return LoopState(plant.initial_state(y0, shape), controller_state, (y0,) * int(delay))


def measurement_noise(y, z, std, rel):
    """The KL as measured: ``y + z·(std + rel·|y|)``, ``z`` a standard normal draw per loop.

    The simulator's noise model, written once for NumPy and for the compiled engine (which traces it
    with sympy symbols).
    """
    return y + z * (std + rel * abs(y))


#: The summary accumulators before the first update: Σe², reached C yet, overshoot, last step outside the band.
SUMMARY_START = (0.0, 0.0, 0.0, -1.0)


def summary_step(acc, y, c, band, t, ops=NUMPY):
    """One update of the running summary figures: :func:`klcontrol.simulate.response_metrics` without a trace.

    Written once: ``simulate(..., summary=True)`` calls it with NumPy arrays and the compiled engine traces
    it into its kernel, so the figures need no stored trajectory.

    Parameters
    ----------
    acc : tuple
        ``(Σ e², reached, overshoot, last step outside the band)``, from :data:`SUMMARY_START`.
    y, c : float, array or symbol
        The noise-free output y(t) and the set point C(t); ``e = y − C``.
    band : float or array
        The settling band, ``tol·|C_final|``.
    t : float
        The step index.
    ops : Ops
        Backend.

    Returns
    -------
    tuple
        The accumulators after step ``t``.
    """
    sumsq, reached, over, last_out = acc
    e = y - c
    reached = ops.where(ops.lt(e, 0.0), reached, 1.0)
    over = ops.where(ops.gt(e, over), ops.where(ops.gt(reached, 0.5), e, over), over)
    last_out = ops.where(ops.gt(abs(e), band), t, last_out)
    return sumsq + e * e, reached, over, last_out


def loop_step(plant, controller, x: LoopState, c, params: dict, noise=0.0, ops: Ops = NUMPY):
    """One update of the closed loop: plant, measurement, delay, filter, law.

    Parameters
    ----------
    plant : Plant
        Any :class:`klcontrol.plant.Plant`.
    controller : Controller
        Supplies the filter and the law (:meth:`Controller.advance`); its own
        state is not touched.
    x : LoopState
        The loop before update ``t``.
    c : float, array or symbol
        Set point ``C(t)`` the controller uses when computing β(t+1).
    params : dict
        The controller's parameters (arrays, tensors or symbols).
    noise : float, array, symbol or callable
        Additive noise on the KL measured after update ``t``, or a function
        ``noise(y) -> kl`` for noise that depends on the output.
    ops : Ops
        Backend of the arithmetic.

    Returns
    -------
    y, kl, LoopState
        The plant output y(t), the measured KL(t), and the loop before update ``t + 1``.
    """
    y, plant_state = plant.step(x.plant, x.controller["beta"], ops)
    if callable(noise):
        kl = noise(y)
    elif type(noise) is float and noise == 0.0:  # noiseless simulation: skip a no-op array add
        kl = y
    else:
        kl = y + noise
    if x.delayed:
        m_in, delayed = x.delayed[0], x.delayed[1:] + (kl,)
    else:
        m_in, delayed = kl, ()
    new_ctrl = controller.advance(x.controller, m_in, c, params, ops)
    return y, kl, LoopState(plant_state, new_ctrl, delayed)
