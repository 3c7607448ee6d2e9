"""Lightning callback: a β controller driven by the KL your module logs.

Contract (all names configurable)::

    class VAE(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.beta = 1.0                      # set by the callback before every step
        def training_step(self, batch, batch_idx):
            recon, kl = ...
            self.log("kl", kl)                   # the measurement the callback reads
            return recon + self.beta * kl

    trainer = L.Trainer(callbacks=[KLControlCallback(IncrementalPI.dynamicvae_dsprites())])

At the end of each training batch the callback reads the KL of that batch
(``source="logged"``: ``self.log("kl", ...)``; ``"outputs"``: the key of the
dict ``training_step`` returns; ``"attribute"``: an attribute of the module),
averages it across DDP ranks, steps the controller and stores the next β in
``pl_module.beta`` (or a dotted path such as ``"cfg.beta"``, or a setter).
The KL of batch t is measured before update t, so β(t+1) comes from y(t−1):
the loop has delay d = 1 in the terms of ``docs/design.md`` (the DynamicVAE
paper's state-space model).  The controller state is saved in Lightning
checkpoints and restored on resume.

Logged pairs (``log_beta``, ``log_kl``) are what ``klcontrol fit`` reads:
row t holds the β *used* in batch t and the KL measured in its forward pass,
i.e. before update t: fit them with ``--kl-lag 1`` (β held between rows when
Lightning logs every ``log_every_n_steps``).

Requires ``lightning`` (``pip install "klcontrol[lightning]"``); the older
``pytorch_lightning`` package is used if ``lightning`` is absent.
"""
from __future__ import annotations

import warnings
from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError:  # the pre-2.0 package name, still common
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError(
            "KLControlCallback needs Lightning: pip install 'klcontrol[lightning]' (or pip install lightning)"
        ) from None

from ..backend import is_torch
from .distributed import all_reduce_mean, step_input

__all__ = ["KLControlCallback", "SOURCES", "disent_scales"]

SOURCES = ("logged", "outputs", "attribute")


class KLControlCallback(Callback):
    """Set ``pl_module.<attribute>`` to the controller's β after every training batch.

    Parameters
    ----------
    controller : Controller
        The β controller (e.g. ``IncrementalPI.dynamicvae_dsprites()``); its
        ``beta`` before the first step is the β of the first batch.
    kl_key : str
        Name of the KL measurement (default ``"kl"``).
    source : {"logged", "outputs", "attribute"}
        Where to read it: ``"logged"`` (default) a metric logged with
        ``self.log(kl_key, kl)`` in ``training_step`` (on_step, as is the
        default there); ``"outputs"`` the key of the dict returned by
        ``training_step`` (``{"loss": loss, "kl": kl}``); ``"attribute"`` the
        module attribute ``kl_key``.  Read it every batch: a metric that was
        not logged in the current batch keeps its last value in Lightning.
    attribute : str or callable
        Where β goes (default ``"beta"``): a module attribute, used in the loss
        as ``recon + self.beta * kl``; a dotted path into the module such as
        ``"cfg.beta"`` (disent's frameworks read ``self.cfg.beta``; no subclass
        needed); or a setter ``f(pl_module, beta)``.
    sync_dist : bool
        Average the KL over the DDP ranks before each step (default ``True``;
        a no-op without an initialised process group), so every rank computes
        the same β.  Logging with ``self.log(..., sync_dist=True)`` is then
        unnecessary.
    log_beta : str or None
        If given, ``pl_module.log(log_beta, β)`` each batch, β being the weight
        *used* in this batch (in the controller's units), at this batch's step.
    log_kl : str or None
        If given, ``pl_module.log(log_kl, kl)`` each batch: the KL the
        controller received (rank-averaged, times ``kl_scale``).  With
        ``log_beta`` these rows are fitted by ``klcontrol fit --kl-lag 1``.
    kl_scale : float
        Factor from the KL the module reports to the nats the controller's set
        point is in (default 1).  disent's default ``loss_reduction="mean"``
        reports the KL averaged over the latent dimensions: pass
        ``kl_scale=z_size`` to control total nats (see :func:`disent_scales`).
    beta_scale : float
        Factor from the controller's β to the weight the module uses (default
        1).  disent's ``"mean"`` reduction also averages the reconstruction over
        the ``x_size`` pixels, so a β of the papers (summed losses) is
        ``β·z_size/x_size`` there.
    float_path : bool or None
        Step the controller on ``float(kl)`` (the law in float64 on the host,
        β a Python float) instead of on the tensor.  ``None`` (default): on a
        CPU, where reading the KL costs no device sync and the float path is
        several times cheaper per step, as long as the controller's state is
        not already on tensors (restored from an accelerator's checkpoint);
        the tensor path on accelerators.  A NaN or infinite KL on the float
        path goes to the tensor path, which masks it and raises at the epoch
        end as on an accelerator.

    Raises
    ------
    ValueError
        On an unknown ``source`` or a controller without ``step``,
        ``state_dict`` and ``load_state_dict``; during training, if the KL
        cannot be found (the message names the key and lists what is there)
        or if a NaN/infinite KL was masked (checked at each epoch end).
    """

    def __init__(
        self,
        controller,
        kl_key: str = "kl",
        source: str = "logged",
        attribute: str = "beta",
        sync_dist: bool = True,
        log_beta: str | None = None,
        log_kl: str | None = None,
        kl_scale: float = 1.0,
        beta_scale: float = 1.0,
        float_path: bool | None = None,
    ):
        missing = [m for m in ("step", "state_dict", "load_state_dict") if not callable(getattr(controller, m, None))]
        if missing:
            raise ValueError(f"controller must have {', '.join(missing)}; got {type(controller).__name__}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if not isinstance(kl_key, str) or not kl_key:
            raise ValueError(f"kl_key must be a non-empty string, got {kl_key!r}")
        if not callable(attribute) and (not isinstance(attribute, str) or not attribute
                                        or any(not part.isidentifier() for part in attribute.split("."))):
            raise ValueError(f"attribute must be an attribute name, a dotted path such as 'cfg.beta', or a setter "
                             f"f(pl_module, beta); got {attribute!r}")
        for name, value in (("kl_scale", kl_scale), ("beta_scale", beta_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < float("inf")):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name, value in (("log_beta", log_beta), ("log_kl", log_kl)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
        if float_path not in (None, True, False):
            raise ValueError(f"float_path must be None, True or False, got {float_path!r}")
        self.float_path = float_path
        self.controller = controller
        self.kl_key = kl_key
        self.source = source
        self.attribute = attribute
        self.sync_dist = bool(sync_dist)
        self.log_beta = log_beta
        self.log_kl = log_kl
        self.kl_scale = float(kl_scale)
        self.beta_scale = float(beta_scale)

    @property
    def state_key(self) -> str:
        """Checkpoint key; includes the names so two such callbacks can coexist."""
        attribute = self.attribute if isinstance(self.attribute, str) else getattr(
            self.attribute, "__qualname__", type(self.attribute).__name__)
        return self._generate_state_key(kl_key=self.kl_key, source=self.source, attribute=attribute)

    @property
    def beta(self):
        """The controller's current β (the one the next batch uses)."""
        return self.controller.beta

    # -- hooks --------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        """Give the module the controller's β before anything (sanity checks included) runs.

        Raises
        ------
        ValueError
            If the dotted path does not lead to an object, or a disent
            framework also schedules the same β (two writers of ``cfg.beta``).
        """
        self._check_framework(pl_module)
        self._publish(pl_module, self.controller.beta)

    def on_train_start(self, trainer, pl_module) -> None:
        """Publish β again: on resume the controller was restored after :meth:`setup`."""
        self._publish(pl_module, self.controller.beta)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Read this batch's KL, step the controller, set β for the next batch."""
        kl = self._read_kl(trainer, pl_module, outputs)
        if self.sync_dist:
            kl = all_reduce_mean(kl)
        kl = step_input(self.controller, kl, self.float_path)
        if self.kl_scale != 1.0:
            kl = kl * self.kl_scale
        used = self.controller.beta  # the β of this batch, before the step below replaces it
        if self.log_beta:
            # Logged at this batch's step next to the KL of this batch's forward pass: the pair klcontrol fit
            # reads with --kl-lag 1 (a torch controller's β is live state: log a copy).
            pl_module.log(self.log_beta, used.clone() if is_torch(used) else used, on_step=True, on_epoch=False)
        if self.log_kl:
            pl_module.log(self.log_kl, kl, on_step=True, on_epoch=False)
        beta = self.controller.step(kl)
        self._publish(pl_module, beta)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Surface masked NaN/infinite KL measurements (one host sync per epoch)."""
        self._check()

    def on_train_end(self, trainer, pl_module) -> None:
        """Same check at the end of training (covers runs stopped by ``max_steps``)."""
        self._check()

    def state_dict(self) -> dict[str, Any]:
        """The controller's state, stored in Lightning checkpoints."""
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the controller from a checkpoint (on ``trainer.fit(ckpt_path=...)``).

        Raises
        ------
        ValueError
            If the checkpoint entry holds no controller state, one for
            another kind of controller, or one the controller refuses (a β
            outside its clamps, non-finite values): nothing is changed.
        """
        if not isinstance(state_dict, dict) or "controller" not in state_dict:
            raise ValueError(f"checkpoint entry {self.state_key!r} holds no controller state")
        self.controller.load_state_dict(state_dict["controller"])

    # -- helpers ------------------------------------------------------------------------
    def _publish(self, pl_module, beta):
        # A torch controller's ``beta`` can be its live state tensor, which the
        # next step updates in place; the module gets a value of its own.
        beta = beta.clone() if is_torch(beta) else beta
        if self.beta_scale != 1.0:
            beta = beta * self.beta_scale
        if callable(self.attribute):
            self.attribute(pl_module, beta)
            return
        owner, name = self._owner(pl_module)
        setattr(owner, name, beta)

    def _owner(self, pl_module):
        *path, name = self.attribute.split(".")
        owner = pl_module
        for i, part in enumerate(path):
            if not hasattr(owner, part):
                where = ".".join(["pl_module"] + path[:i])
                raise ValueError(f"KLControlCallback: attribute={self.attribute!r}: {where} has no attribute "
                                 f"{part!r}")
            owner = getattr(owner, part)
        return owner, name

    def _check_framework(self, pl_module):
        if callable(self.attribute):
            return
        _, name = self._owner(pl_module)  # fails early, naming the missing part of a dotted path
        # disent frameworks: a registered schedule for the same cfg field would overwrite β every step
        has_schedule = getattr(pl_module, "has_schedule", None)
        if self.attribute.startswith("cfg.") and callable(has_schedule) and has_schedule(name):
            raise ValueError(f"KLControlCallback: the module also schedules {name!r} (register_schedule); remove "
                             "the schedule, or the schedule and the controller overwrite each other every step")
        cfg = getattr(pl_module, "cfg", None)
        if getattr(cfg, "loss_reduction", None) == "mean" and self.kl_scale == 1.0 and self.beta_scale == 1.0:
            warnings.warn(
                "KLControlCallback: the module's cfg.loss_reduction is 'mean' (disent's default): its KL is the "
                "mean over latent dimensions and its reconstruction the mean over pixels, while set points are "
                "total nats; pass **disent_scales(module) (kl_scale=z_size, beta_scale=z_size/x_size), or "
                "use loss_reduction='mean_sum'", stacklevel=2)

    def _check(self):
        check = getattr(self.controller, "check", None)
        if callable(check):
            check()

    def _read_kl(self, trainer, pl_module, outputs):
        kl = self._find_kl(trainer, pl_module, outputs)
        # A KL still attached to the graph would chain every step's graph into
        # the controller state.
        return kl.detach() if is_torch(kl) else kl

    def _find_kl(self, trainer, pl_module, outputs):
        key = self.kl_key
        if self.source == "logged":
            metrics = trainer.callback_metrics
            if key not in metrics:
                raise ValueError(
                    f"KLControlCallback: no logged metric {key!r} in this training step; "
                    f"call self.log({key!r}, kl) in training_step. Logged metrics: {sorted(metrics) or 'none'}"
                )
            return metrics[key]
        if self.source == "outputs":
            if not isinstance(outputs, dict) or key not in outputs:
                found = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
                raise ValueError(
                    f"KLControlCallback: training_step must return a dict with key {key!r} "
                    f"(e.g. {{'loss': loss, {key!r}: kl}}); it returned {found}"
                )
            return outputs[key]
        if not hasattr(pl_module, key):
            raise ValueError(
                f"KLControlCallback: the module has no attribute {key!r}; "
                f"set self.{key} = kl.detach() in training_step"
            )
        return getattr(pl_module, key)

    def __repr__(self):
        return (
            f"KLControlCallback({self.controller!r}, kl_key={self.kl_key!r}, source={self.source!r}, "
            f"attribute={self.attribute!r}, kl_scale={self.kl_scale!r}, beta_scale={self.beta_scale!r})"
        )


def disent_scales(framework) -> dict:
    """``kl_scale`` and ``beta_scale`` for a disent framework's loss reduction.

    disent (``disent.frameworks.vae``) reads β from ``framework.cfg.beta`` and
    reduces its losses by ``cfg.loss_reduction``: ``"mean_sum"`` sums the KL
    over latent dimensions and the reconstruction over pixels (the papers'
    units: both scales 1); ``"mean"`` (its default) averages both, so the KL is
    per latent dimension (× ``z_size`` gives nats) and the β that weighs it is
    ``β·z_size/x_size`` in the papers' units.

    Parameters
    ----------
    framework : LightningModule
        A disent framework (anything with ``cfg.loss_reduction`` and a model
        with ``z_size`` and ``x_size`` or ``x_shape``).

    Returns
    -------
    dict
        ``{"kl_scale": …, "beta_scale": …}`` to pass to :class:`KLControlCallback`.

    Raises
    ------
    ValueError
        If the reduction is unknown or the model sizes cannot be found.
    """
    cfg = getattr(framework, "cfg", None)
    reduction = getattr(cfg, "loss_reduction", None)
    if reduction == "mean_sum":
        return {"kl_scale": 1.0, "beta_scale": 1.0}
    if reduction != "mean":
        raise ValueError(f"disent_scales: cfg.loss_reduction must be 'mean' or 'mean_sum', got {reduction!r}")
    model = getattr(framework, "_model", None)
    z_size = getattr(model, "z_size", None)
    x_size = getattr(model, "x_size", None)
    if x_size is None and getattr(model, "x_shape", None) is not None:
        x_size = 1
        for n in model.x_shape:
            x_size *= int(n)
    if not z_size or not x_size:
        raise ValueError("disent_scales: the framework's model (framework._model) has no z_size and x_size/x_shape")
    return {"kl_scale": float(z_size), "beta_scale": float(z_size) / float(x_size)}
