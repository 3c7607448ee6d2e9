"""Presets that take PyTorch-VAE's ``BetaVAE`` config numbers and reproduce its losses bit for bit.

PyTorch-VAE (github.com/AntixK/PyTorch-VAE, ``models/beta_vae.py`` at commit
a6896b944c918dd7030e7d795a8c13e5c6345ec7) weighs the KL of its ``BetaVAE`` in one of two ways, with
``kld_weight`` (``exp_params``, passed as ``M_N``) folded in:

- ``loss_type='H'``: ``recon + (beta·kld_weight)·KLD`` (``configs/bhvae.yaml``: beta 10);
- ``loss_type='B'``: ``recon + (gamma·kld_weight)·|KLD − C|`` with ``C = clamp(C_max/C_stop_iter·num_iter,
  0, C_max)`` in float32, ``num_iter`` counting calls of ``loss_function`` from 1 (``configs/bbvae.yaml``:
  gamma 10, max_capacity 25, Capacity_max_iter 10000).

:func:`from_pytorch_vae_config` returns a :class:`~klcontrol.integrations.BetaLoss` that computes the same
term with the same float operations (the products ``beta·kld_weight`` and ``gamma·kld_weight`` are formed in
Python, as PyTorch-VAE forms them, then multiply the float32 KL once), so ``recons_loss + kl_term(kld_loss)``
equals PyTorch-VAE's loss bit for bit, and so do the parameters after any number of Adam steps.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import is_torch
from ..controllers import CapacityRamp, FixedBeta
from ..setpoints import SetPoint

__all__ = ["PyTorchVAECapacity", "pytorch_vae_controller", "from_pytorch_vae_config"]

#: BetaVAE.__init__'s defaults for the keys a config may leave out.
DEFAULTS = {"beta": 4, "gamma": 1000.0, "max_capacity": 25, "Capacity_max_iter": 1e5, "loss_type": "B"}


def _number(name, v, positive=True):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) \
            or (positive and v <= 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {v!r}")
    return v


class PyTorchVAECapacity(SetPoint):
    """PyTorch-VAE's capacity ``C(n) = clamp(C_max/C_stop_iter·n, 0, C_max)`` in its float32 rounding.

    ``n`` is PyTorch-VAE's ``num_iter`` (1 at the first call of
    ``loss_function``); a controller whose clock starts at 0 uses
    ``PyTorchVAECapacity(...).shift(-1)``.  A float64 ramp
    (``LinearRamp(0, C_max, C_stop_iter)``) differs from this by up to one
    float32 ulp at many steps.

    Parameters
    ----------
    max_capacity : float
        ``C_max`` (``model_params["max_capacity"]``).
    capacity_max_iter : float
        ``C_stop_iter`` (``model_params["Capacity_max_iter"]``).
    reciprocal : bool
        Round as a CUDA device does (default ``False``: as a CPU does).
        PyTorch divides a CUDA tensor by a Python number as a multiplication
        by the number's float32 reciprocal, a CPU divides; the quotient
        ``C_max/C_stop_iter`` can differ by one ulp.

    Raises
    ------
    ValueError
        If ``max_capacity`` or ``capacity_max_iter`` is not a finite number > 0.
    """

    def __init__(self, max_capacity, capacity_max_iter, reciprocal: bool = False):
        self.max_capacity = float(_number("max_capacity", max_capacity))
        self.capacity_max_iter = float(_number("capacity_max_iter", capacity_max_iter))
        self.reciprocal = bool(reciprocal)
        c_max, stop = np.float32(self.max_capacity), np.float32(self.capacity_max_iter)
        self._rate = c_max * (np.float32(1) / stop) if self.reciprocal else c_max / stop
        self._c_max = c_max

    def value(self, t):
        """``C`` at ``num_iter = t`` (int, array or tensor)."""
        if is_torch(t):
            import torch

            n = t.to(torch.float32)
            return torch.clamp(n * float(self._rate), 0.0, float(self._c_max)).to(t.dtype)
        c = np.clip(np.float32(self._rate) * np.asarray(t, dtype=np.float32), np.float32(0), self._c_max)
        return c.astype(np.float64)

    def to_dict(self):
        """A JSON-able description."""
        return {"kind": "PyTorchVAECapacity", "max_capacity": self.max_capacity,
                "capacity_max_iter": self.capacity_max_iter, "reciprocal": self.reciprocal}

    def __repr__(self):
        extra = ", reciprocal=True" if self.reciprocal else ""
        return f"PyTorchVAECapacity({self.max_capacity:g}, {self.capacity_max_iter:g}{extra})"


def pytorch_vae_controller(model_params: dict, exp_params: dict, reciprocal: bool = False):
    """The controller equivalent to a PyTorch-VAE ``BetaVAE`` config.

    Parameters
    ----------
    model_params : dict
        The config's ``model_params`` (``loss_type``, ``beta``, ``gamma``,
        ``max_capacity``, ``Capacity_max_iter``; missing keys take
        ``BetaVAE.__init__``'s defaults).
    exp_params : dict
        The config's ``exp_params`` (``kld_weight``, PyTorch-VAE's ``M_N``).
    reciprocal : bool
        Capacity rounding of a CUDA run (see :class:`PyTorchVAECapacity`).

    Returns
    -------
    Controller
        ``loss_type='H'``: ``FixedBeta(beta·kld_weight)``; ``'B'``:
        ``CapacityRamp(gamma·kld_weight, PyTorchVAECapacity(max_capacity,
        Capacity_max_iter).shift(-1))``.  β is in the units of PyTorch-VAE's
        mean-reduced losses (``kld_weight`` included).

    Raises
    ------
    ValueError
        If ``model_params`` or ``exp_params`` is not a dict, ``loss_type`` is
        not ``'H'`` or ``'B'``, or a number is missing where no default
        exists, not finite or not > 0.
    """
    for name, d in (("model_params", model_params), ("exp_params", exp_params)):
        if not isinstance(d, dict):
            raise ValueError(f"{name} must be a dict (the config's {name} section), got {type(d).__name__}")
    p = {**DEFAULTS, **model_params}
    if "kld_weight" not in exp_params:
        raise ValueError("exp_params['kld_weight'] is missing (PyTorch-VAE's M_N)")
    kld_weight = _number("exp_params['kld_weight']", exp_params["kld_weight"])
    if p["loss_type"] == "H":
        # beta·kld_weight as a Python product, as BetaVAE.loss_function evaluates it left to right.
        return FixedBeta(_number("model_params['beta']", p["beta"], positive=False) * kld_weight)
    if p["loss_type"] == "B":
        gamma = _number("model_params['gamma']", p["gamma"], positive=False)
        capacity = PyTorchVAECapacity(p["max_capacity"], p["Capacity_max_iter"], reciprocal=reciprocal)
        return CapacityRamp(gamma * kld_weight, capacity.shift(-1))  # num_iter = controller clock + 1
    raise ValueError(f"model_params['loss_type'] must be 'H' or 'B', got {p['loss_type']!r}")


def from_pytorch_vae_config(model_params: dict, exp_params: dict, reciprocal: bool = False,
                            step_in_eval: bool = True, path: str = "auto"):
    """A :class:`~klcontrol.integrations.BetaLoss` reproducing PyTorch-VAE's ``BetaVAE`` KL term.

    ``recons_loss + kl_term(kld_loss)`` replaces the ``if self.loss_type``
    branch of ``BetaVAE.loss_function``; the term is ``(beta·kld_weight)·KLD``
    (``'H'``) or ``(gamma·kld_weight)·|KLD − C|`` (``'B'``), equal bit for bit
    to PyTorch-VAE's.

    Parameters
    ----------
    model_params, exp_params : dict
        The config's sections (see :func:`pytorch_vae_controller`).
    reciprocal : bool
        Capacity rounding of a CUDA run (see :class:`PyTorchVAECapacity`).
    step_in_eval : bool
        Advance the capacity clock on validation batches too (default
        ``True``: PyTorch-VAE's ``num_iter`` counts every ``loss_function``
        call, Lightning's sanity-check batches included).  PyTorch-VAE weighs
        validation KLs with ``M_N = 1.0``; this term keeps ``kld_weight``, so
        validation *losses* differ while training stays exact.
    path : {"auto", "float", "tensor"}
        See :class:`~klcontrol.integrations.BetaLoss`; every path is exact.

    Returns
    -------
    BetaLoss
        A ``torch.nn.Module`` to assign to the model (``model.kl_term = …``),
        so that Lightning's checkpoints carry the capacity clock, which
        PyTorch-VAE's own ``num_iter`` (a plain attribute) does not.

    Raises
    ------
    ValueError
        As :func:`pytorch_vae_controller`.
    """
    from .module import BetaLoss

    ctrl = pytorch_vae_controller(model_params, exp_params, reciprocal=reciprocal)
    return BetaLoss(ctrl, form="capacity" if isinstance(ctrl, CapacityRamp) else "weighted", path=path,
                    step_in_eval=step_in_eval, sync_dist=False)
