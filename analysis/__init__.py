"""Analysis of the KL loop: stability, identification, tuning, plots."""
