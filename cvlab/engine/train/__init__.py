"""Training: start and resume, the session a run trains with, preflight, the loop, optimizer, init-from,
TensorBoard."""
