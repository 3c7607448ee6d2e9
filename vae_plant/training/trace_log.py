"""The training trace: rows collected on the device, written in blocks to CSV and TensorBoard.

Row ``t`` (docs/design.md indexing): ``beta`` = β(t), the weight of update t;
``kl`` = y(t), the batch KL of the model after update t; ``recon`` and
``kl_0 … kl_{L-1}`` from the same forward pass; ``setpoint`` = C(t), the set
point the controller used when it turned y(t) into β(t+1).
"""
from __future__ import annotations

import csv
import os

import numpy as np

__all__ = ["TraceLog", "read_trace_csv", "columns", "trace_rows"]


def columns(latent_dim: int) -> list[str]:
    """CSV header: ``step, beta, kl, recon, setpoint, kl_0 … kl_{L-1}``."""
    return ["step", "beta", "kl", "recon", "setpoint"] + [f"kl_{i}" for i in range(latent_dim)]


def _fmt64(v) -> str:
    return repr(float(v))


def _fmt32(v) -> str:
    # Shortest repr that round-trips the float32 the model computed.
    return str(np.float32(v))


class TraceLog:
    """Appends trace rows to ``DIR/trace.csv`` and TensorBoard events in ``DIR/tb``.

    Parameters
    ----------
    run_dir : str
        Run directory.
    latent_dim : int
        Number of per-latent KL columns.
    first_step : int
        Step of the next row; on resume the CSV is cut to the rows before it
        and TensorBoard events from it on are purged.
    tensorboard_every : int
        Stride of TensorBoard scalars.
    """

    def __init__(self, run_dir: str, latent_dim: int, first_step: int = 0, tensorboard_every: int = 1):
        self.path = os.path.join(run_dir, "trace.csv")
        self.header = columns(latent_dim)
        self.latent_dim = latent_dim
        self.tb_every = max(1, int(tensorboard_every))
        self.next_step = int(first_step)
        if first_step == 0:
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.header)
        else:
            self._truncate(first_step)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=first_step or None)

    def _truncate(self, keep: int):
        lines = _trace_lines(self.path, self.header)
        if len(lines) - 1 < keep:
            raise ValueError(
                f"cannot resume: {self.path} has {len(lines) - 1} rows but the checkpoint needs the first {keep}"
            )
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as fh:
            fh.writelines(lines[: keep + 1])
        os.replace(tmp, self.path)

    def write(self, block: np.ndarray, setpoints: np.ndarray):
        """Append rows for steps ``next_step …``.

        Parameters
        ----------
        block : ndarray ``(n, 3 + L)``
            Columns beta, kl, recon, kl_0 … kl_{L-1} (float64).
        setpoints : ndarray ``(n,)``
        """
        n = len(block)
        steps = range(self.next_step, self.next_step + n)
        with open(self.path, "a", newline="") as fh:
            w = csv.writer(fh)
            for t, row, c in zip(steps, block, setpoints):
                w.writerow([t, _fmt64(row[0]), _fmt32(row[1]), _fmt32(row[2]), _fmt64(c)] + [_fmt32(v) for v in row[3:]])
        tags = ["beta", "kl", "recon"] + [f"kl_latent/{i}" for i in range(block.shape[1] - 3)]
        for t, row, c in zip(steps, block, setpoints):
            if t % self.tb_every:
                continue
            values = list(zip(tags, row.tolist()))
            if np.isfinite(c):
                values.append(("setpoint", float(c)))
            self._add_scalars(values, t)
        self.writer.flush()
        self.next_step += n

    def _add_scalars(self, values, step):
        # One event per step holding every scalar (what ``add_scalar`` writes,
        # one ``simple_value`` per tag, readers see the same tags and steps):
        # 14 ``add_scalar`` calls per row were the trainer's largest per-step
        # cost on a CPU.  ``_get_file_writer`` is SummaryWriter's own accessor
        # (it also writes the purge marker of a resumed run).
        get = getattr(self.writer, "_get_file_writer", None)
        if get is None:  # another SummaryWriter implementation: the public call per scalar
            for tag, v in values:
                self.writer.add_scalar(tag, v, step)
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        get().add_summary(Summary(value=[Summary.Value(tag=tag, simple_value=v) for tag, v in values]), step)

    def close(self):
        """Flush and close the TensorBoard writer."""
        self.writer.close()


def _trace_lines(path, header) -> list[str]:
    """The lines of a trainer ``trace.csv`` (header checked); ``ValueError`` naming the file otherwise."""
    if not os.path.isfile(path):
        raise ValueError(f"cannot resume: {path} is missing")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            lines = fh.readlines()
    except UnicodeDecodeError:
        raise ValueError(f"cannot resume: {path} is not a text trace (binary or not UTF-8)") from None
    if not lines or lines[0].rstrip("\r\n").split(",") != header:
        raise ValueError(f"cannot resume: {path} does not have the header {','.join(header)}")
    return lines


def trace_rows(path, header) -> int:
    """Number of data lines of a trainer ``trace.csv`` after checking its header.

    Raises
    ------
    ValueError
        If the file is missing, not text or has another header.
    """
    lines = _trace_lines(path, header)
    # A last line without its newline is a row cut by a crash: it does not count.
    return len(lines) - 1 - (not lines[-1].endswith("\n") and len(lines) > 1)


def read_trace_csv(path) -> dict:
    """Read a trainer ``trace.csv`` into arrays: the run's full record, every column this module writes.

    The trainer's own reader, behind :attr:`~klcontrol.vae_plant.training.trainer.RunResult.trace` and the
    figures of ``klcontrol compare``, which need the columns a log of β and KL lacks (``recon``, the per-latent
    KL) and the trainer's invariants (steps 0, 1, 2, … without a gap, rows as wide as the header).  Code that
    needs β, the KL and the set point only reads the same file with
    :func:`klcontrol.analysis.identification.traces.read_trace`, the reader of every training log.

    Returns
    -------
    dict
        ``step`` (int), ``beta``, ``kl``, ``recon``, ``setpoint`` (float, shape
        ``(T,)``) and ``kl_latent`` (shape ``(T, L)``).
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a trainer trace (not a text CSV: {exc})") from None
    if not rows or rows[0][:5] != ["step", "beta", "kl", "recon", "setpoint"]:
        raise ValueError(f"{path} is not a trainer trace (header {rows[0][:8] if rows else 'missing'})")
    width = len(rows[0])
    for i, r in enumerate(rows[1:], 2):
        if len(r) != width:
            raise ValueError(f"{path}: line {i} has {len(r)} fields, the header has {width} (a row cut by a crash?)")
    try:
        data = np.array(rows[1:], dtype=float).reshape(len(rows) - 1, width)
    except ValueError as exc:
        raise ValueError(f"{path}: a row does not parse as numbers ({exc})") from None
    steps = data[:, 0]
    if not np.array_equal(steps, np.arange(len(steps))):
        bad = int(np.flatnonzero(steps != np.arange(len(steps)))[0])
        raise ValueError(f"{path}: the steps are not 0, 1, 2, … in order (line {bad + 2} has step {steps[bad]:g}, "
                         f"expected {bad}); rows of two runs mixed, or an edited trace")
    return {
        "step": data[:, 0].astype(int),
        "beta": data[:, 1],
        "kl": data[:, 2],
        "recon": data[:, 3],
        "setpoint": data[:, 4],
        "kl_latent": data[:, 5:],
    }
