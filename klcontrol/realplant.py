"""Your VAE as the plant: the protocol a real training plant follows, a loader for ``module:factory``, an adapter.

The contract (docs/your_vae.md). A *factory* ``make()`` returns a fresh plant (model, optimizer, data stream);
the plant has:

``plant.step(beta_of) -> kl``
    One update, the loop as trained (delay 0): a forward pass on the next batch; ``beta = beta_of(kl)`` where
    ``kl`` is that pass's KL as a float (nats, summed over latents, averaged over the batch); backward of
    ``recon + beta·kl``; an optimizer step. Returns that forward pass's KL.
``plant.state_dict()`` / ``plant.load_state_dict(sd)``
    Everything needed to fork a settled state exactly: model, optimizer, data position, RNG. Only tensors,
    numbers, strings, lists and dicts, so that ``torch.load(..., weights_only=True)`` reads it back.

Optional: ``plant.last_recon`` (the reconstruction loss of the last forward pass, for traces and GECO), and a
factory that accepts ``seed=``, ``device=`` or ``batch_size=`` keywords (the experiment passes those it accepts).

Nothing here imports torch: a protocol plant is defined without klcontrol's torch code. :class:`TorchPlant`
builds one from a torch model, an optimizer, data and a loss function; it imports torch when it is built.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
from typing import Any, Callable, Protocol, runtime_checkable

__all__ = ["TrainingPlant", "check_plant", "load_factory", "make_plant", "factory_kwargs", "TorchPlant"]


@runtime_checkable
class TrainingPlant(Protocol):
    """A real VAE that trains one update at a time under a β chosen from that update's own KL."""

    def step(self, beta_of: Callable[[float], float]) -> float:
        """One update; returns the KL of its forward pass."""

    def state_dict(self) -> dict:
        """Everything needed to fork this state exactly."""

    def load_state_dict(self, sd: dict) -> None:
        """Restore a state of :meth:`state_dict`."""


def check_plant(plant, where: str = "the plant") -> Any:
    """Return ``plant`` if it follows :class:`TrainingPlant`; otherwise a ``TypeError`` naming what is missing."""
    missing = [m for m in ("step", "state_dict", "load_state_dict") if not callable(getattr(plant, m, None))]
    if missing:
        raise TypeError(f"{where} ({type(plant).__name__}) does not follow the plant protocol: no callable "
                        f"{', '.join(missing)} (docs/your_vae.md: step(beta_of) -> kl, state_dict(), load_state_dict(sd))")
    return plant


def load_factory(spec: str, flag: str = "--plant") -> Callable:
    """The factory named by ``"module:function"`` or ``"path/to/file.py:function"`` (like ASGI servers load an app).

    A module name is imported with the current directory on the path; a ``.py`` path is imported from that file.
    This runs the user's own code, named explicitly by them; nothing is read from a cache.

    Raises
    ------
    ValueError
        A malformed spec, a module or file that cannot be imported (with the reason), or a missing or
        non-callable attribute; each message names ``flag``.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"{flag} {spec!r}: expected MODULE:FACTORY or FILE.py:FACTORY, e.g. my_vae:make")
    mod_name, attr = spec.split(":")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
            path = os.path.abspath(mod_name)
            if not os.path.isfile(path):
                raise ValueError(f"{flag} {spec!r}: no file {mod_name}")
            name = "klcontrol_user_plant_" + os.path.splitext(os.path.basename(path))[0]
            module = sys.modules.get(name)
            if module is None or getattr(module, "__file__", None) != path:
                s = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(s)
                sys.modules[name] = module
                s.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's module: any failure is reported in one line)
        raise ValueError(f"{flag} {spec!r}: importing {mod_name} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"{flag} {spec!r}: {mod_name} has no attribute {attr!r}")
    if not callable(factory):
        raise ValueError(f"{flag} {spec!r}: {mod_name}.{attr} is not callable")
    return factory


def factory_kwargs(factory: Callable, **offered) -> dict:
    """The keywords among ``offered`` (e.g. ``seed``, ``device``, ``batch_size``) that ``factory`` accepts."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in offered.items() if v is not None}
    return {k: v for k, v in offered.items() if k in params and v is not None}


def make_plant(factory: Callable, where: str = "the plant", **offered):
    """Call ``factory`` with the keywords it accepts among ``offered`` and check the result follows the protocol."""
    return check_plant(factory(**factory_kwargs(factory, **offered)), where)


class TorchPlant:
    """A protocol plant from a torch model, an optimizer, data and a loss function.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : torch.optim.Optimizer
    losses : callable
        ``losses(model, batch) -> (recon, kl)``: scalar tensors of one forward pass (KL in nats, summed over
        latents, averaged over the batch, the quantity set points are in).
    data : tensor or sequence, optional
        Training examples; minibatches of ``batch_size`` are drawn without replacement in an order reshuffled
        each epoch by the plant's own generator (saved with the state).
    batch_size : int
        With ``data``.
    sample : callable, optional
        Instead of ``data``: ``sample(generator) -> batch``, drawing with the given ``torch.Generator``.
    seed : int
        Seed of the plant's generator.
    device : str or torch.device, optional
        Where batches go (default: the model's device).

    Notes
    -----
    Randomness inside ``losses`` (the reparameterisation noise) should come from torch's global generator,
    whose state the plant saves and restores too, or from ``plant.generator``.
    """

    def __init__(self, model, optimizer, losses, data=None, batch_size: int = 64, sample=None, seed: int = 0,
                 device=None):
        import torch

        if (data is None) == (sample is None):
            raise ValueError("TorchPlant needs exactly one of data= (examples) or sample= (a batch sampler)")
        if data is not None and (int(batch_size) < 1 or int(batch_size) > len(data)):
            raise ValueError(f"batch_size must be in [1, {len(data)}] (the number of examples), got {batch_size}")
        self.model, self.optimizer, self.losses, self.data, self.sample = model, optimizer, losses, data, sample
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        # A sampler draws on the device (so does its generator); shuffling indices happens on the CPU.
        self.generator = torch.Generator(device=self.device if sample is not None else "cpu").manual_seed(self.seed)
        self._order, self._pos, self._epoch = None, 0, 0
        self.last_recon = math.nan
        self.last_beta = math.nan

    def _batch(self):
        import torch

        if self.sample is not None:
            b = self.sample(self.generator)
        else:
            n = len(self.data)
            if self._order is None or self._pos + self.batch_size > n:
                self._order = torch.randperm(n, generator=self.generator)
                self._pos = 0
                self._epoch += 1
            idx = self._order[self._pos:self._pos + self.batch_size]
            self._pos += self.batch_size
            b = self.data[idx] if torch.is_tensor(self.data) else torch.stack([torch.as_tensor(self.data[int(i)])
                                                                                for i in idx])
        return b.to(self.device) if torch.is_tensor(b) else b

    def step(self, beta_of) -> float:
        """One update (see the module doc); returns the forward pass's KL."""
        self.model.train()
        recon, kl = self.losses(self.model, self._batch())
        k = float(kl.detach())
        beta = float(beta_of(k))
        loss = recon + beta * kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.last_recon, self.last_beta = float(recon.detach()), beta
        return k

    def state_dict(self) -> dict:
        """Model, optimizer, data position and every generator's state."""
        import torch

        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "order": self._order.clone() if self._order is not None else None, "pos": self._pos,
                "epoch": self._epoch, "seed": self.seed}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict` (a fork continues exactly as the original would)."""
        import torch

        self.model.load_state_dict(sd["model"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.generator.set_state(sd["generator"])
        torch.set_rng_state(sd["torch_rng"])
        self._order = sd["order"].clone() if sd.get("order") is not None else None
        self._pos, self._epoch = int(sd["pos"]), int(sd["epoch"])
