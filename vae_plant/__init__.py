"""The real plant: a PyTorch β-VAE on dSprites, its trainer and metrics."""
