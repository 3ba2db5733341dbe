"""Many runs at once: seed and grid sweeps run locally or as one Slurm array (sweep), and their side-by-side
comparison as mean +- std over seeds with plots (compare)."""
