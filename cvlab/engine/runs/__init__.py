"""A run on disk: its directory and lock, checkpoints, what may change on resume, listing, loading a trained model."""
