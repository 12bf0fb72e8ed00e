"""Genome spaces: what CMA-ES searches, each declaring its dimensions, and the pure map from a genome vector to a Recipe."""
