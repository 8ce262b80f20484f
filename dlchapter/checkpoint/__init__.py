"""Checkpoints: the orbax store, its manifest and errors, exact resume and a run's identity, and
saving or restoring a trained model."""
