"""Everything that runs a model: runs/ (on disk), train/, eval/, and export, predict and `cvlab import dtrb` on top.
Top level: the device and precision, torch.distributed, and the progress protocol the CLI implements."""
