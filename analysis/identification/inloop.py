"""The identification experiment as a plan that runs inside the user's own training loop.

For users who cannot hand their loop over to ``klcontrol identify --plant``: :class:`InLoopExperiment` is used
where a β controller is (``beta = exp.step(kl)`` in the five-line loop, or inside
:class:`klcontrol.integrations.lightning.KLControlCallback`). It plays, in one run from the model the user has:
a settle phase at each β of ``betas`` (the operating point ``main`` last), an open-loop excitation to fit, a
held-out open-loop run, a closed-loop run with set-point steps under DynamicVAE's PI, and a second held-out
open-loop run — the runs of :func:`klcontrol.vae_plant.experiments.identify.plan`, played one after another
instead of forked from a checkpoint. The excitation amplitude follows the same rule, from the settle phases'
own levels and noise (:func:`~klcontrol.analysis.identification.experiment.design_amplitude`).

The user logs ``step, beta, kl`` every update as usual and saves the plan (:meth:`InLoopExperiment.save`);
``klcontrol fit --plan plan.json LOG`` cuts the log into the phases and fits exactly as ``klcontrol identify``'s
traces are fitted (docs/your_vae.md). Call ``i`` consumes the KL measured in update ``i``'s forward pass and
returns β of update ``i`` (the loop as trained, delay 0); a log of that KL needs ``--kl-lag 1``.
"""
from __future__ import annotations

import json
import math

import numpy as np

from klcontrol.analysis.identification.experiment import (
    MEAN_WINDOW,
    NOISE_ROWS,
    beta_schedule,
    design_amplitude,
    setpoint_steps,
    settled_noise,
    static_points,
)

__all__ = ["InLoopExperiment", "plan_segments", "split_log"]


def plan_segments(betas=(2.0, 4.0), main=4.0, settle_steps=4000, fit_steps=2100, val_steps=1200, closed_steps=1200):
    """The phases of the in-loop experiment: ``name, kind, role, beta, start, stop`` (update indices).

    The names are those of ``klcontrol identify``'s runs (``settle_b4``, ``ol_b4_s1`` …), so the fit reads both alike.
    """
    betas = [float(b) for b in betas]
    main = float(main)
    if main not in betas:
        raise ValueError(f"the main operating point {main:g} must be one of the betas {betas}")
    if any(not (b > 0 and math.isfinite(b)) for b in betas) or len(set(betas)) != len(betas):
        raise ValueError(f"betas must be distinct, positive and finite, got {betas}")
    for name, v in (("settle_steps", settle_steps), ("fit_steps", fit_steps), ("val_steps", val_steps),
                    ("closed_steps", closed_steps)):
        if int(v) < 2 * MEAN_WINDOW:
            raise ValueError(f"{name} must be at least {2 * MEAN_WINDOW} updates, got {v}")
    # Settled one after another from one model: the others from the largest β down, then the operating point.
    # A KL falls fast when β rises and recovers slowly when it drops, so the run rises once (to the smallest β)
    # and reaches β* falling.
    order = sorted((b for b in betas if b != main), reverse=True) + [main]
    seg, t = [], 0
    for b in order:
        seg.append(dict(name=f"settle_b{b:g}", kind="settle", role="static", beta=b, start=t, stop=t + int(settle_steps)))
        t += int(settle_steps)
    m = f"{main:g}"
    for name, kind, role, n in ((f"ol_b{m}_s1", "open_loop", "fit", fit_steps),
                                (f"ol_b{m}_s2", "open_loop", "held_out", val_steps),
                                (f"cl_b{m}_s3", "closed_loop", "held_out", closed_steps),
                                (f"ol_b{m}_s4", "open_loop", "held_out", val_steps)):
        seg.append(dict(name=name, kind=kind, role=role, beta=main, start=t, stop=t + int(n)))
        t += int(n)
    return seg


class InLoopExperiment:
    """A β "controller" that plays the identification experiment inside any training loop.

    Parameters
    ----------
    betas, main, settle_steps, fit_steps, val_steps, closed_steps
        As :func:`plan_segments` (the defaults of ``klcontrol identify``).
    lead, hold_min, hold_max
        Open-loop excitation: updates at β* before the random binary signal, and its hold times.
    setpoint_step, kp, ki, window
        Closed-loop phase: set-point steps of ±``setpoint_step`` nats around the settled KL, DynamicVAE's PI.
    seed : int
        Seed of the excitation signals.
    sensitivity : float, optional
        ``dKL/d ln β`` at β* for the amplitude rule, when asked for (e.g. from a prior fit); default: from the
        settle phases' own levels (needs two ``betas``).
    """

    def __init__(self, betas=(2.0, 4.0), main=4.0, settle_steps=4000, fit_steps=2100, val_steps=1200,
                 closed_steps=1200, lead=200, hold_min=5, hold_max=500, setpoint_step=2.5, kp=0.01, ki=0.005,
                 window=5, seed=0, sensitivity=None):
        self.segments = plan_segments(betas, main, settle_steps, fit_steps, val_steps, closed_steps)
        if sensitivity is None and len(betas) < 2:
            raise ValueError("the amplitude rule needs two settled levels (betas) or a sensitivity from a prior fit")
        if int(lead) >= min(int(fit_steps), int(val_steps)):
            raise ValueError(f"lead ({lead}) must be shorter than the open-loop phases ({fit_steps}, {val_steps})")
        self.design = dict(betas=[float(b) for b in betas], main=float(main), lead=int(lead), hold_min=int(hold_min),
                           hold_max=int(hold_max), setpoint_step=float(setpoint_step), kp=float(kp), ki=float(ki),
                           window=int(window), seed=int(seed),
                           sensitivity=None if sensitivity is None else float(sensitivity))
        self.total = self.segments[-1]["stop"]
        self._kl: list = []  # every KL consumed, y(i − 1) at call i
        self._calls = 0
        self._derived = None  # level, noise, δ, static points: fixed once the settle phases end
        self._pi = None
        self._beta = float(self.segments[0]["beta"])

    # -- the controller protocol ---------------------------------------------------------------------------
    @property
    def beta(self) -> float:
        """β of the next update."""
        return self._beta

    @property
    def updates(self) -> int:
        """Updates to train: every phase, plus one whose forward pass measures the last phase's last KL."""
        return self.total + 1

    @property
    def done(self) -> bool:
        """Whether every phase has been played (later calls hold β at the operating point)."""
        return self._calls > self.total

    @property
    def phase(self) -> str:
        """Name of the phase the next update belongs to (``"done"`` after the last)."""
        s = self._segment(self._calls)
        return s["name"] if s else "done"

    def prime(self, kl) -> None:
        """Accept the initial model's KL (like :meth:`klcontrol.Controller.prime`); the plan is unchanged."""

    def check(self) -> None:
        """Nothing is deferred (kept for the callbacks that call it)."""

    def step(self, kl) -> float:
        """Consume the KL of this update's forward pass; return β for this update."""
        v = float(kl.detach()) if hasattr(kl, "detach") else float(kl)
        if not math.isfinite(v):
            raise ValueError(f"KL measurement is {v!r} at update {self._calls}; the experiment's state is unchanged")
        i = self._calls
        if i > 0:
            self._kl.append(v)  # y(i − 1)
        try:
            seg = self._segment(i)
            if seg is not None and seg["kind"] != "settle" and self._derived is None:
                self._derive()
            beta = self._beta_at(i, seg, v)
        except ValueError:
            if i > 0:
                self._kl.pop()  # a refused step changes nothing
            raise
        self._beta = beta
        self._calls += 1
        return self._beta

    def state_dict(self) -> dict:
        """The experiment's state (resumes exactly with :meth:`load_state_dict`)."""
        return dict(kind="inloop_experiment", design=self.design, segments=self.segments, calls=self._calls,
                    kl=list(self._kl), beta=self._beta, derived=self._derived,
                    pi=None if self._pi is None else self._pi.state_dict())

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict` (same design only)."""
        if sd.get("kind") != "inloop_experiment" or sd.get("design") != self.design:
            raise ValueError("not the state of an InLoopExperiment with this design")
        self._calls, self._kl, self._beta = int(sd["calls"]), list(sd["kl"]), float(sd["beta"])
        self._derived = sd["derived"]
        self._pi = None
        if sd["pi"] is not None:
            self._pi = self._make_pi()
            self._pi.load_state_dict(sd["pi"])

    # -- the plan ------------------------------------------------------------------------------------------
    def plan(self) -> dict:
        """Phases, design and what was derived from the settle phases (JSON-ready)."""
        return dict(kind="klcontrol.inloop_plan", segments=self.segments, design=self.design, derived=self._derived,
                    total_updates=self.total, updates_to_run=self.updates)

    def save(self, path) -> None:
        """Write :meth:`plan` as JSON (atomically): ``klcontrol fit --plan`` reads it."""
        from klcontrol.fileio import write_json

        write_json(path, self.plan())

    def _segment(self, i):
        return next((s for s in self.segments if s["start"] <= i < s["stop"]), None)

    def _settle_kl(self, seg):
        # Update j's KL y(j) was consumed at call j + 1, stored at index j.
        return np.asarray(self._kl[seg["start"]:seg["stop"]], dtype=float)

    def _derive(self):
        d = self.design
        settles = [s for s in self.segments if s["kind"] == "settle"]
        main = next(s for s in settles if s["beta"] == d["main"])
        rows = min(NOISE_ROWS, main["stop"] - main["start"])
        noise = settled_noise(self._settle_kl(main), rows=rows)
        pts = static_points([(np.full(s["stop"] - s["start"], s["beta"]), self._settle_kl(s)) for s in settles],
                            rows=rows)
        levels = [p["level"] for p in sorted(pts, key=lambda p: p["beta"])]
        if d["sensitivity"] is None and any(b >= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"the settle phases' KL levels {[round(v, 4) for v in levels]} (β ascending) do not fall "
                             "with β: longer settle_steps, or betas where the KL has not collapsed; the experiment "
                             "stops here (its state is unchanged)")
        if d["sensitivity"] is not None:
            sens = d["sensitivity"]
        else:
            from klcontrol.analysis.identification.models import fit_static_map

            sens = float(d["main"] * fit_static_map(pts).derivative(d["main"]))
        delta = design_amplitude(noise["sigma_mean"], sens)
        self._derived = dict(level=noise["level"], sigma_mean=noise["sigma_mean"], sensitivity=sens, delta=delta,
                             static_points=pts)

    def _schedule(self, seg):
        """β of an open-loop phase: ``klcontrol identify``'s design for the run of that name (seed 0: same signal)."""
        cache = self.__dict__.setdefault("_schedules", {})
        if seg["name"] not in cache:
            d = self.design
            k = int(seg["name"].rsplit("_s", 1)[1])  # identify's seeds: 1 (fit), 2 and 4 (held out)
            _, beta = beta_schedule(d["main"], self._derived["delta"], seg["stop"] - seg["start"] - d["lead"],
                                    d["lead"], d["hold_min"], d["hold_max"], d["seed"] * 1000 + k)
            cache[seg["name"]] = beta
        return cache[seg["name"]]

    def _make_pi(self):
        from klcontrol.controllers import IncrementalPI

        d = self.design
        seg = next(s for s in self.segments if s["kind"] == "closed_loop")
        hold = (seg["stop"] - seg["start"]) // 4
        sp = setpoint_steps(round(self._derived["level"], 2), d["setpoint_step"], hold)
        return IncrementalPI(d["kp"], d["ki"], sp, beta0=d["main"], filter=d["window"])

    def _beta_at(self, i, seg, kl):
        d = self.design
        if seg is None:
            return d["main"]
        if seg["kind"] == "settle":
            return seg["beta"]
        if seg["kind"] == "open_loop":
            return float(self._schedule(seg)[i - seg["start"]])
        if i == seg["start"]:
            self._pi = self._make_pi()
            self._pi.prime(kl)
            return float(self._pi.beta)
        return float(self._pi.step(kl))


def split_log(plan: dict, trace) -> dict:
    """Cut one aligned log (row ``t``: β(t), y(t)) into the plan's phases: name → ``klcontrol.Trace``.

    Raises
    ------
    ValueError
        If the log does not cover a phase, or its β in a settle phase is not the plan's.
    """
    from klcontrol.simulate import Trace

    if plan.get("kind") != "klcontrol.inloop_plan":
        raise ValueError("--plan: not a plan written by InLoopExperiment.save")
    step = np.asarray(trace.step)
    out = {}
    for s in plan["segments"]:
        m = (step >= s["start"]) & (step < s["stop"])
        if int(m.sum()) != s["stop"] - s["start"]:
            raise ValueError(f"the log covers {int(m.sum())} of the {s['stop'] - s['start']} updates of phase "
                             f"{s['name']} (steps {s['start']}…{s['stop'] - 1}): log every update, the whole run")
        beta = np.asarray(trace.beta)[m]
        if s["kind"] == "settle" and not np.allclose(beta, s["beta"]):
            raise ValueError(f"phase {s['name']}: the logged β is not {s['beta']:g}: is this the run of this plan, "
                             "and is the β column the β of each update (--beta-logged)?")
        sp = np.asarray(trace.setpoint)[m] if trace.setpoint is not None else np.full(int(m.sum()), np.nan)
        if s["kind"] != "closed_loop":
            sp = np.full(int(m.sum()), np.nan)
        out[s["name"]] = Trace(step[m] - s["start"], beta, np.asarray(trace.kl)[m], sp, None,
                               dict(trace.meta, source=f"{trace.meta.get('source', 'log')}[{s['name']}]"))
    return out


def read_plan(path) -> dict:
    """Read a plan JSON (no code is run; a clear error names the file)."""
    try:
        with open(path) as fh:
            plan = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--plan {path}: cannot read it as a plan ({exc})") from None
    if not isinstance(plan, dict) or plan.get("kind") != "klcontrol.inloop_plan":
        raise ValueError(f"--plan {path}: not a plan written by InLoopExperiment.save")
    return plan
