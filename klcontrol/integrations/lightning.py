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
``pl_module.beta``.  The KL of batch t is measured before update t, so β(t+1)
comes from y(t−1): the loop has delay d = 1 in the terms of ``docs/design.md``
(the DynamicVAE paper's state-space model).  The controller state is saved in
Lightning checkpoints and restored on resume.

Requires ``lightning`` (``pip install "klcontrol[lightning]"``); the older
``pytorch_lightning`` package is used if ``lightning`` is absent.
"""
from __future__ import annotations

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
from .distributed import all_reduce_mean

__all__ = ["KLControlCallback", "SOURCES"]

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
    attribute : str
        Module attribute that receives β (default ``"beta"``); use it in the
        loss as ``recon + self.beta * kl``.
    sync_dist : bool
        Average the KL over the DDP ranks before each step (default ``True``;
        a no-op without an initialised process group), so every rank computes
        the same β.  Logging with ``self.log(..., sync_dist=True)`` is then
        unnecessary.
    log_beta : str or None
        If given, also ``pl_module.log(log_beta, β)`` each batch.

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
    ):
        missing = [m for m in ("step", "state_dict", "load_state_dict") if not callable(getattr(controller, m, None))]
        if missing:
            raise ValueError(f"controller must have {', '.join(missing)}; got {type(controller).__name__}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        for name, value in (("kl_key", kl_key), ("attribute", attribute)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        self.controller = controller
        self.kl_key = kl_key
        self.source = source
        self.attribute = attribute
        self.sync_dist = bool(sync_dist)
        self.log_beta = log_beta

    @property
    def state_key(self) -> str:
        """Checkpoint key; includes the names so two such callbacks can coexist."""
        return self._generate_state_key(kl_key=self.kl_key, source=self.source, attribute=self.attribute)

    @property
    def beta(self):
        """The controller's current β (the one the next batch uses)."""
        return self.controller.beta

    # -- hooks --------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        """Give the module the controller's β before anything (sanity checks included) runs."""
        self._publish(pl_module, self.controller.beta)

    def on_train_start(self, trainer, pl_module) -> None:
        """Publish β again: on resume the controller was restored after :meth:`setup`."""
        self._publish(pl_module, self.controller.beta)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Read this batch's KL, step the controller, set β for the next batch."""
        kl = self._read_kl(trainer, pl_module, outputs)
        if self.sync_dist:
            kl = all_reduce_mean(kl)
        beta = self.controller.step(kl)
        self._publish(pl_module, beta)
        if self.log_beta:
            pl_module.log(self.log_beta, beta, on_step=True, on_epoch=False)

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
            If the checkpoint entry holds no controller state or one for
            another kind of controller.
        """
        if not isinstance(state_dict, dict) or "controller" not in state_dict:
            raise ValueError(f"checkpoint entry {self.state_key!r} holds no controller state")
        self.controller.load_state_dict(state_dict["controller"])

    # -- helpers ------------------------------------------------------------------------
    def _publish(self, pl_module, beta):
        # A torch controller's ``beta`` can be its live state tensor, which the
        # next step updates in place; the module gets a value of its own.
        setattr(pl_module, self.attribute, beta.clone() if is_torch(beta) else beta)

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
            f"attribute={self.attribute!r})"
        )
