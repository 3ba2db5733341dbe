"""Measuring generators: FID/KID/precision-recall with distgan's MNIST classifier or Inception, StackedMNIST's
mode count, the real statistics' cache, evaluation during training (event) and `distgan eval` reports."""
