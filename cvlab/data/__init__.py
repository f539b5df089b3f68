"""Datasets, charsets, tokenizers and loaders. Never imports cvlab.models."""
