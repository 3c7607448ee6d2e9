"""Training the real plant: the β-VAE, the trainer with any controller, checkpoints, traces, the run lock, presets.

The public names below are imported from their modules on first use."""
from klcontrol.lazy import facade

__getattr__, __dir__, __all__ = facade(__name__, {
    "BetaVAE": ".model",
    "bernoulli_recon": ".model",
    "gaussian_kl": ".model",
    "vae_losses": ".model",
    "train": ".trainer",
    "load_run": ".trainer",
    "Trainer": ".trainer",
    "RunResult": ".trainer",
    "resolve_device": ".trainer",
    "COMPILE_MODES": ".trainer",
    "save": ".checkpoint",
    "load": ".checkpoint",
    "latest": ".checkpoint",
    "list_checkpoints": ".checkpoint",
    "latest_good": ".checkpoint",
    "capture_rng": ".checkpoint",
    "restore_rng": ".checkpoint",
    "checkpoint_path": ".checkpoint",
    "non_finite": ".checkpoint",
    "CheckpointError": ".checkpoint",
    "FORMAT": ".checkpoint",
    "TraceLog": ".trace_log",
    "read_trace_csv": ".trace_log",
    "columns": ".trace_log",
    "trace_rows": ".trace_log",
    "RunLock": ".run_lock",
    "LOCK_NAME": ".run_lock",
    "SCHEDULES": ".presets",
    "Schedule": ".presets",
    "primes": ".presets",
    "first_update": ".presets",
    "controlvae_setpoint": ".presets",
})
