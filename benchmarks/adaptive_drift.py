"""AdaptivePI against fixed gains on a plant whose slope drifts from g′ = −0.05 to −3 (figure + table).

Run: ``python benchmarks/adaptive_drift.py [--steps 20000] [--out docs/img/adaptive_drift.png]``.
The fixed gains are the adaptive controller's own table design (bin of a = 0.05) for the first slope
(−0.05, "fast") and for the last (−3, "safe"); the adaptive one starts from the safe gains as its fallback.
"""
from __future__ import annotations

import argparse

import numpy as np

from klcontrol import AdaptivePI, IncrementalPI, adaptive_table
from klcontrol.analysis.tuning.adaptive import drift_run


def main(argv=None):
    """Run the three controllers, print RMSE per third of the run, save the figure."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--out", default="docs/img/adaptive_drift.png")
    args = ap.parse_args(argv)
    k = int(np.searchsorted(adaptive_table.A_EDGES, 0.05, side="right") - 1)
    kpn, kin = adaptive_table.KP_N[k], adaptive_table.KI_N[k]
    fixed = IncrementalPI([kpn / 0.05, kpn / 3.0], [kin / 0.05, kin / 3.0], 20.0, beta0=30.0, beta_max=200.0)
    adaptive = AdaptivePI(20.0, kp0=kpn / 3.0, ki0=kin / 3.0, beta0=30.0, beta_max=200.0, a_prior=0.05)
    fx, adp = drift_run(fixed, steps=args.steps), drift_run(adaptive, steps=args.steps)
    n = args.steps
    parts = {"whole run": slice(0, n), "1st third": slice(0, n // 3), "2nd third": slice(n // 3, 2 * n // 3),
             "3rd third": slice(2 * n // 3, n)}

    def rmse(y, c):
        return float(np.sqrt(np.mean((y - c) ** 2)))

    print("| tracking RMSE, nats | " + " | ".join(parts) + " |")
    print("|---|" + "---|" * len(parts))
    rows = [("fixed, designed for g′ = −0.05", fx["y"][:, 0]), ("fixed, designed for g′ = −3", fx["y"][:, 1]),
            ("AdaptivePI", adp["y"])]
    for name, y in rows:
        print(f"| {name} | " + " | ".join(f"{rmse(y[s], fx['setpoint'][s]):.3f}" for s in parts.values()) + " |")
    g_hat = adp["b"] / (1 - adp["phi"])
    print(f"adapted on {100 * adp['adapted'].mean():.1f} % of the updates; final ĝ′ = {g_hat[-1]:.3f} "
          f"(true {adp['gprime'][-1]:.3f}), â = {1 / adp['phi'][-1] - 1:.4f} (true 0.05)")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = np.arange(n)
        fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
        for (name, y), col in zip(rows, ("tab:red", "tab:blue", "tab:green")):
            ax[0].plot(t, y, lw=0.6, color=col, label=name)
        ax[0].plot(t, fx["setpoint"], "k", lw=0.5, label="set point")
        ax[0].set_ylim(15, 25)
        ax[0].set_ylabel("KL, nats")
        ax[0].legend(fontsize=7, loc="upper right")
        ax[1].plot(t, adp["gprime"], "k", lw=1, label="true g′")
        ax[1].plot(t, g_hat, "tab:green", lw=0.8, label="RLS ĝ′")
        ax[1].set_ylim(-4, 0.5)
        ax[1].set_ylabel("g′")
        ax[1].legend(fontsize=7)
        ax[2].semilogy(t, adp["ki"], "tab:green", lw=0.8, label="AdaptivePI Ki")
        ax[2].axhline(kin / 0.05, color="tab:red", lw=0.8, label="fixed Ki (g′ = −0.05)")
        ax[2].axhline(kin / 3.0, color="tab:blue", lw=0.8, label="fixed Ki (g′ = −3)")
        ax[2].set_ylabel("Ki")
        ax[2].set_xlabel("update")
        ax[2].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
