"""distgan: a distributed GAN trainer for PyTorch (Accelerate, WebDataset, wandb). Layers, lowest first: utils,
config, models/data, dist, run, eval, training, sweeps, cli; docs/architecture.md draws them."""
