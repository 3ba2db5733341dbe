"""The training step and what it is made of: the Trainer, its D and G phases, losses and penalties, augmentation
(DiffAugment, ADA), EMA, optimisers and schedules, warm starts, StyleGAN extras, metric reports and final outputs."""
