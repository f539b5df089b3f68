"""cvlab: an experiment runner for scene-text and handwriting recognition."""

__version__ = "0.1.0"
