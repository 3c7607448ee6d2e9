"""A pythae ``TrainingCallback`` that drives ``model.beta`` of a pythae ``BetaVAE`` with a klcontrol controller.

pythae 0.1.2 (``pythae.models.BetaVAE``) weighs the KL with the model attribute ``self.beta`` (set from
``model_config.beta`` at construction) and returns the batch's KL as ``reg_loss`` of the model output; its
trainer (``pythae.trainers.BaseTrainer``) calls ``on_train_step_end(training_config, model=model)`` after
each optimizer step but passes no model output to callbacks.  :class:`PythaeBetaCallback` therefore reads the
KL with a forward hook on the model (training-mode forwards only), steps the controller after each training
step and sets ``model.beta`` for the next one: delay d = 1, as with the Lightning callback.

What pythae cannot resume (checked in pythae 0.1.2's ``BaseTrainer``): its checkpoints
(``checkpoint_epoch_k/``) hold the optimizer, scheduler, model weights and configs only; callbacks have no
state in them, ``model.beta`` is a plain attribute outside ``state_dict`` (``model_config.beta`` keeps the
initial value), and the trainer has no resume entry point (a new trainer starts at epoch 1).  Save
``callback.state_dict()`` yourself and pass it back with ``load_state_dict`` before training again; or use
:class:`~klcontrol.integrations.BetaLoss` inside the model, whose state is in ``model.state_dict()`` and so
in pythae's ``model.pt``.
"""
from __future__ import annotations

from typing import Any

try:
    from pythae.trainers.training_callbacks import TrainingCallback
except ImportError:
    raise ImportError("PythaeBetaCallback needs pythae: pip install pythae") from None

from ..backend import is_torch
from .distributed import step_input

__all__ = ["PythaeBetaCallback"]


class PythaeBetaCallback(TrainingCallback):
    """Set ``model.beta`` of a pythae model to the controller's β after every training step.

    Parameters
    ----------
    controller : Controller
        The β controller; its ``beta`` before the first step is the β of the
        first batch.  β is in pythae's units: ``BetaVAE`` sums the KL over
        latents and the reconstruction over pixels per sample, then averages
        over the batch (the papers' units).
    kl_key : str
        Key of the model output holding the batch's KL (default
        ``"reg_loss"``, pythae's ``BetaVAE``).
    attribute : str
        Model attribute that holds β (default ``"beta"``).
    float_path : bool or None
        Step on ``float(kl)`` (``None``, the default: on a CPU, where it costs
        no device sync) or on the tensor (accelerators); see
        :class:`~klcontrol.integrations.KLControlCallback`.

    Raises
    ------
    ValueError
        On a controller without ``step``/``state_dict``/``load_state_dict``, an
        empty ``kl_key`` or ``attribute``; during training, if the model has
        no ``attribute`` or its output no ``kl_key`` (the message lists the
        keys), or if a NaN/infinite KL was masked (checked each epoch end).

    Notes
    -----
    pythae does not save callback state: see the module docstring.  Under
    pythae's DDP the hook sits on the inner model and each rank steps its own
    controller on its own KL (no averaging).
    """

    def __init__(self, controller, kl_key: str = "reg_loss", attribute: str = "beta", float_path: bool | None = None):
        missing = [m for m in ("step", "state_dict", "load_state_dict") if not callable(getattr(controller, m, None))]
        if missing:
            raise ValueError(f"controller must have {', '.join(missing)}; got {type(controller).__name__}")
        for name, value in (("kl_key", kl_key), ("attribute", attribute)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if float_path not in (None, True, False):
            raise ValueError(f"float_path must be None, True or False, got {float_path!r}")
        self.controller = controller
        self.kl_key = kl_key
        self.attribute = attribute
        self.float_path = float_path
        self._kl = None
        self._handle = None

    @staticmethod
    def _inner(model):
        return getattr(model, "module", model)  # pythae wraps the model in DDP when distributed

    def on_train_begin(self, training_config, **kwargs):
        """Hook the model's forward and give it the controller's β before the first batch."""
        model = self._inner(kwargs["model"])
        if not hasattr(model, self.attribute):
            raise ValueError(f"PythaeBetaCallback: the model ({type(model).__name__}) has no attribute "
                             f"{self.attribute!r} to set β on")
        if self._handle is not None:
            self._handle.remove()
        self._handle = model.register_forward_hook(self._capture)
        self._publish(model, self.controller.beta)

    def _capture(self, module, inputs, output):
        if not module.training:  # eval_step and predict forwards are not measurements of this update
            return
        if self.kl_key not in output:
            keys = sorted(output.keys()) if hasattr(output, "keys") else type(output).__name__
            raise ValueError(f"PythaeBetaCallback: the model output has no {self.kl_key!r}; it has {keys}")
        self._kl = output[self.kl_key].detach()

    def on_train_step_end(self, training_config, **kwargs):
        """Step the controller on the KL of the batch just trained on; set β for the next."""
        kl, self._kl = self._kl, None
        if kl is None:
            raise ValueError("PythaeBetaCallback: no training forward pass was seen in this step")
        self._publish(self._inner(kwargs["model"]), self.controller.step(step_input(self.controller, kl,
                                                                                      self.float_path)))

    def on_epoch_end(self, training_config, **kwargs):
        """Raise if a NaN or infinite KL was masked (one host sync per epoch)."""
        check = getattr(self.controller, "check", None)
        if callable(check):
            check()

    def on_train_end(self, training_config, **kwargs):
        """Remove the forward hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def state_dict(self) -> dict[str, Any]:
        """The controller's state: save it yourself, pythae's checkpoints do not hold callbacks."""
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the controller before ``trainer.train()``; β is published at ``on_train_begin``.

        Raises
        ------
        ValueError
            If ``state_dict`` holds no controller state or one the controller
            refuses (nothing is changed then).
        """
        if not isinstance(state_dict, dict) or "controller" not in state_dict:
            raise ValueError("PythaeBetaCallback.load_state_dict: state_dict holds no 'controller' entry")
        self.controller.load_state_dict(state_dict["controller"])

    def _publish(self, model, beta):
        # A tensor β can be the controller's live state, updated in place by the next step.
        setattr(model, self.attribute, beta.clone() if is_torch(beta) else beta)

    def __repr__(self):
        return f"PythaeBetaCallback({self.controller!r}, kl_key={self.kl_key!r}, attribute={self.attribute!r})"
