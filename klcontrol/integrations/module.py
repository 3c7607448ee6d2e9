"""A delay-0 adapter: the controller steps inside the loss, and lives in the model's ``state_dict``.

``BetaLoss`` is a ``torch.nn.Module``: put it in your model (``self.kl_term = BetaLoss(ctrl)``) and write the
loss as ``recon + self.kl_term(kl)``.  Each call steps the controller on the KL just computed (detached) and
returns the weighted KL term of this same update (delay d = 0, as in the plain loop).  The controller's state
is kept in registered buffers, so whatever saves ``model.state_dict()`` (Lightning, pythae, Hugging Face,
your own ``torch.save``) carries it, and ``model.load_state_dict`` restores it.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

from ..backend import is_torch
from ..controllers import CapacityRamp
from ..filters import MovingAverage
from .distributed import all_reduce_mean

__all__ = ["BetaLoss", "FORMS", "PATHS"]

FORMS = ("auto", "weighted", "capacity")
PATHS = ("auto", "float", "tensor")

_STATE = re.compile(r"state_(\w+)$")
_FILTER = re.compile(r"filter_(\d+)$")


def _capacity_ready(controller) -> bool:
    """True for a CapacityRamp whose β is exactly γ·sign(KL − C): no filter, no clamps."""
    if not isinstance(controller, CapacityRamp):
        return False
    f = controller.filter
    p = controller.params
    return (isinstance(f, MovingAverage) and f.window == 1 and not controller.shape
            and np.all(np.isneginf(p["beta_min"])) and np.all(np.isposinf(p["beta_max"])))


class BetaLoss(nn.Module):
    """The KL term of a β-VAE loss, with β from a controller stepped on the KL it weighs (delay 0).

    ``loss = recon + beta_loss(kl)``.  In training mode each call steps the
    controller once on ``kl.detach()`` (averaged over DDP ranks when
    ``sync_dist``) and returns the term for this update:

    - ``form="weighted"``: ``β·kl`` with β the controller's answer to this KL;
    - ``form="capacity"`` (a :class:`~klcontrol.CapacityRamp` without filter
      or clamps): Burgess et al.'s ``γ·|kl − C(t)|`` with the controller's set
      point ``C(t)`` at this step.  Its gradient equals that of ``β·kl`` with
      ``β = γ·sign(kl − C)``; its value is the capacity loss itself, so the
      logged loss matches implementations that write it that way
      (PyTorch-VAE's ``loss_type='B'``).

    In eval mode (``model.eval()``) the controller is not stepped unless
    ``step_in_eval``: the term uses the current β (or ``C`` at the current
    clock).

    Parameters
    ----------
    controller : Controller
        The β controller (any klcontrol controller with one loop).
    form : {"auto", "weighted", "capacity"}
        ``"auto"`` (default) picks ``"capacity"`` for a CapacityRamp without
        filter or clamps, ``"weighted"`` otherwise.
    path : {"auto", "float", "tensor"}
        How the controller is stepped.  ``"float"``: on ``float(kl)`` (the
        law in float64 on the host, β a Python float; ~10× cheaper per step on
        a CPU, where reading the KL costs no device sync); ``"tensor"``: on the
        tensor, on its device, never syncing (the path for accelerators).
        ``"auto"`` (default) takes the float path for a CPU KL as long as the
        controller's state is not already on tensors (e.g. restored from an
        accelerator's checkpoint), the tensor path otherwise.  A NaN or
        infinite KL on the float path is handed to the tensor path, which
        masks it and makes :meth:`check` raise, as on an accelerator.
    step_in_eval : bool
        Step the controller in eval mode too (default ``False``).  Exact for
        PyTorch-VAE, whose capacity clock also advances on validation batches;
        wrong for PI controllers, which would integrate validation KLs.
    sync_dist : bool
        Average the KL over DDP ranks before the step (default ``True``; a
        no-op without an initialised process group) so every rank keeps the
        same controller state.  The returned term weighs this rank's own KL.

    Raises
    ------
    ValueError
        On an unknown ``form`` or ``path``, ``form="capacity"`` for a
        controller that is not a CapacityRamp without filter and clamps, or a
        controller without ``step``/``state_dict``/``load_state_dict`` or
        with more than one loop.

    Notes
    -----
    Buffers: ``clock`` (the set-point clock), ``skipped`` (masked steps),
    ``y0``, ``state_<entry>`` per law state entry and ``filter_<i>`` per
    filter sample.  They are refreshed from the controller whenever the
    state dict is taken (not every step: that would cost copies) and loaded
    back through ``controller.load_state_dict``, which validates them; the
    gains come from the code, not the checkpoint.  float64 buffers hold a
    float-path (host) state and are restored as such; other dtypes as tensors.
    """

    def __init__(self, controller, form: str = "auto", path: str = "auto", step_in_eval: bool = False,
                 sync_dist: bool = True):
        super().__init__()
        missing = [m for m in ("step", "state_dict", "load_state_dict") if not callable(getattr(controller, m, None))]
        if missing:
            raise ValueError(f"controller must have {', '.join(missing)}; got {type(controller).__name__}")
        if getattr(controller, "shape", ()) != ():
            raise ValueError(f"controller must drive one loop (scalar gains), got gains of shape {controller.shape}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        ready = _capacity_ready(controller)
        if form == "capacity" and not ready:
            raise ValueError("form='capacity' needs a CapacityRamp without filter and without beta_min/beta_max "
                             f"clamps (its β is then exactly γ·sign(KL − C)); got {controller!r}")
        self.controller = controller
        self.form = ("capacity" if ready else "weighted") if form == "auto" else form
        self.path = path
        self.step_in_eval = bool(step_in_eval)
        self.sync_dist = bool(sync_dist)
        if self.form == "capacity":
            self._gamma = float(controller.params["gamma"])  # a Python float: γ multiplies as a scalar does
        for name, value in self._buffer_values().items():
            self.register_buffer(name, value)

    # -- the loss term ------------------------------------------------------------------
    def forward(self, kl):
        """Step the controller on ``kl`` (training mode) and return the weighted KL term.

        Parameters
        ----------
        kl : torch.Tensor
            This batch's KL (nats, a scalar), attached to the graph.

        Returns
        -------
        torch.Tensor
            ``β·kl`` or ``γ·|kl − C|`` (see the class docstring).

        Raises
        ------
        ValueError
            If ``kl`` is not a one-element tensor.
        """
        if not is_torch(kl) or kl.numel() != 1:
            raise ValueError(f"kl must be a one-element tensor (the batch's KL), got "
                             f"{type(kl).__name__}{tuple(kl.shape) if is_torch(kl) else ''}")
        ctrl = self.controller
        stepping = self.training or self.step_in_eval
        if self.form == "capacity":
            c = ctrl.setpoint(ctrl._t)  # C of this update: the clock before the step below advances it
            if stepping:
                self._step(kl)
            return self._gamma * (kl - c).abs()
        beta = self._step(kl) if stepping else ctrl.beta
        return beta * kl

    def _step(self, kl):
        ctrl = self.controller
        m = kl.detach()
        if self.sync_dist:
            m = all_reduce_mean(m)
        if self.path == "tensor" or (self.path == "auto" and (m.device.type != "cpu"
                                                              or is_torch(ctrl.state["beta"]))):
            return ctrl.step(m.reshape(()))
        v = float(m)
        if not math.isfinite(v):  # masked on the tensor path; check() reports it
            return ctrl.step(m.reshape(()))
        return ctrl.step(v)

    @property
    def beta(self):
        """The controller's current β (after a training call: the β that weighed that call's KL)."""
        return self.controller.beta

    def check(self):
        """Raise ``ValueError`` if a NaN or infinite KL was masked (one host sync; see ``Controller.check``)."""
        check = getattr(self.controller, "check", None)
        if callable(check):
            check()

    # -- persistence through the module's state_dict --------------------------------------
    def _buffer_values(self) -> dict:
        sd = self.controller.state_dict()

        def tensor(v, dtype=torch.float64):
            return v.detach().clone() if is_torch(v) else torch.tensor(v, dtype=dtype)

        out = {"clock": torch.tensor(int(sd["t"]), dtype=torch.int64),
               "skipped": tensor(sd.get("skipped", 0), torch.int64),
               "y0": torch.tensor(float(sd.get("y0", 0.0)), dtype=torch.float64)}
        for k, v in sd["state"].items():
            if k == "filter":
                out.update({f"filter_{i}": tensor(x) for i, x in enumerate(v)})
            else:
                out[f"state_{k}"] = tensor(v)
        return out

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # The controller's live state is the truth; the buffers are its snapshot for whoever saves.
        for name, value in self._buffer_values().items():
            self._buffers[name] = value
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        ours = {k[len(prefix):]: v for k, v in state_dict.items()
                if k.startswith(prefix) and "." not in k[len(prefix):]}
        known = {n for n in ours if n in ("clock", "skipped", "y0") or _STATE.match(n) or _FILTER.match(n)}
        if strict:
            unexpected_keys.extend(prefix + n for n in sorted(set(ours) - known))
        need = [n for n in self._buffers if not _FILTER.match(n)]
        absent = [prefix + n for n in need if n not in ours]
        if absent:
            missing_keys.extend(absent)
            return
        filters = sorted((int(_FILTER.match(n).group(1)), n) for n in known if _FILTER.match(n))

        def value(v):
            # float64 is the float path's (host) state: restore it as numbers, as a fresh controller holds them
            return v.tolist() if v.dtype == torch.float64 else v

        current = self.controller.state_dict()
        sd = {"kind": current["kind"], "t": int(ours["clock"]), "y0": float(ours["y0"]),
              "params": current["params"], "skipped": ours["skipped"],
              "state": {k: value(ours[f"state_{k}"]) for k in current["state"] if k != "filter"}}
        sd["state"]["filter"] = [value(ours[n]) for _, n in filters]
        try:
            self.controller.load_state_dict(sd)
        except ValueError as e:
            error_msgs.append(f"{prefix or 'BetaLoss '}controller state: {e}")
            return
        for name, v in self._buffer_values().items():
            self._buffers[name] = v

    def extra_repr(self) -> str:
        """The controller, form and path (shown in ``print(model)``)."""
        return f"{self.controller!r}, form={self.form!r}, path={self.path!r}"
