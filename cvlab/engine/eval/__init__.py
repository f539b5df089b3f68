"""Evaluation: the evaluation pass, metrics and protocols, decoding (greedy, beam, LM), what eval records, error
analysis."""
