"""Modelling: clinical features, model kinds, splits, evaluation, explanations (no I/O)."""
