"""Training: the loop, evaluation on a split, and atomic checkpoints."""
