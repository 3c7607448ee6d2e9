"""One β for every rank: average the KL across data-parallel processes.

Under DDP each rank measures the KL of its own mini-batch, so unsynchronised
controllers would drift apart and the ranks would optimise different
objectives.  Averaging the measurement (the KL of the global batch, for equal
local batch sizes) before the controller step keeps every rank's controller in
the same state, hence the same β, without broadcasting β itself.

The reduction is one ``all_reduce`` on the measurement's device: with NCCL it
is queued on the current stream like any other kernel, so the step stays free
of host synchronisation.
"""
from __future__ import annotations

import numpy as np

from ..backend import is_torch

__all__ = ["all_reduce_mean", "distributed_world_size", "DistributedController", "step_input"]


def distributed_world_size(group=None) -> int:
    """Number of processes in ``group``, or 1 when ``torch.distributed`` is not initialised.

    Parameters
    ----------
    group : ProcessGroup, optional
        Process group (default: the world).

    Returns
    -------
    int
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def all_reduce_mean(kl, group=None):
    """Mean of ``kl`` over the ranks of ``group``; the input itself is left unchanged.

    Outside an initialised process group (or with one process) this returns
    ``kl`` unchanged (tensors detached), so the same training script runs
    with ``python`` and with ``torchrun``.

    Parameters
    ----------
    kl : torch.Tensor, float or array
        This rank's KL measurement. Tensors stay on their device and are
        reduced without a host sync; floats and arrays are reduced through a
        float64 tensor on the backend's device (a host round trip, as
        reading a float implies anyway).
    group : ProcessGroup, optional
        Process group (default: the world).

    Returns
    -------
    torch.Tensor, float or ndarray
        The mean over ranks, of the same kind as ``kl`` (tensors detached;
        integer tensors become the default floating dtype).

    Raises
    ------
    ValueError
        If ``kl`` is neither a tensor nor convertible to a float array.
    """
    import torch
    import torch.distributed as dist

    n = distributed_world_size(group)
    if is_torch(kl):
        out = kl.detach()
        if not torch.is_floating_point(out):
            out = out.to(torch.get_default_dtype())
        if n == 1:
            return out
        # all_reduce works in place: reduce a copy, never the caller's tensor.
        out = out.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out.div_(n)
    try:
        arr = np.asarray(kl, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"KL measurement must be a tensor, a number or an array, got {kl!r}") from None
    if n == 1:
        return float(arr) if arr.ndim == 0 else arr
    t = torch.as_tensor(arr, dtype=torch.float64, device=_collective_device(group))
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    mean = (t / n).cpu().numpy()
    return float(mean) if mean.ndim == 0 else mean


def _collective_device(group):
    import torch
    import torch.distributed as dist

    # NCCL only reduces CUDA tensors; every other backend takes CPU tensors.
    if "nccl" in str(dist.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class DistributedController:
    """A controller whose measurements are averaged over the ranks first.

    ``DistributedController(ctrl).step(kl)`` is ``ctrl.step(all_reduce_mean(kl))``;
    every other attribute (``beta``, ``state_dict``, ``load_state_dict``,
    ``check``, ``prime``, ...) is the wrapped controller's.  Every rank must
    call :meth:`step` the same number of times (a collective), and start from
    the same controller state (same constructor, same checkpoint).

    Parameters
    ----------
    controller : Controller
        Any object with ``step(kl)`` (e.g. :class:`klcontrol.IncrementalPI`).
    group : ProcessGroup, optional
        Process group to average over (default: the world).

    Raises
    ------
    ValueError
        If ``controller`` has no callable ``step``.
    """

    def __init__(self, controller, group=None):
        if not callable(getattr(controller, "step", None)):
            raise ValueError(f"controller must have a step(kl) method, got {type(controller).__name__}")
        self.controller = controller
        self.group = group

    def step(self, kl):
        """Average ``kl`` over the ranks, then step the wrapped controller.

        Parameters
        ----------
        kl : torch.Tensor, float or array
            This rank's KL measurement.

        Returns
        -------
        float, ndarray or tensor
            β for the next update, identical on every rank.
        """
        return self.controller.step(all_reduce_mean(kl, self.group))

    def __getattr__(self, name):
        # Guard against recursion while copy/pickle rebuild the object before
        # ``controller`` exists.
        if name == "controller":
            raise AttributeError(name)
        return getattr(self.controller, name)

    def __repr__(self):
        return f"DistributedController({self.controller!r})"


def step_input(controller, kl, float_path=None):
    """What a callback steps ``controller`` on: ``float(kl)`` on the float path, else the tensor ``kl``.

    The float path (``float_path=None``: automatic) is taken for a one-element CPU tensor and a scalar controller
    whose state is not on tensors: there ``float()`` costs no device sync and the float step a fraction of the tensor
    step. ``True``/``False`` force it. A non-finite KL stays a tensor, so the controller masks it and reports it at
    its next ``check()``.

    Parameters
    ----------
    controller : klcontrol.Controller
    kl : torch.Tensor or float
    float_path : bool or None

    Returns
    -------
    float or torch.Tensor
    """
    import math

    if not is_torch(kl) or float_path is False:
        return kl
    if float_path is None:
        state = getattr(controller, "state", None)
        if not (kl.device.type == "cpu" and kl.numel() == 1 and getattr(controller, "shape", ()) == ()
                and isinstance(state, dict) and not is_torch(state.get("beta"))):
            return kl
    v = float(kl)
    return v if math.isfinite(v) else kl
