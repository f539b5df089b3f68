"""Training loop, evaluation, metrics, checkpoints, TensorBoard writing."""
