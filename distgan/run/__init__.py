"""What a run reads and writes on disk: its directory (rundir), checkpoints written atomically and read as data
(checkpoint, checkpoint_read; StyleGAN2-ADA pickles: pretrained), rank-0 tracking and plots, samples and exports."""
