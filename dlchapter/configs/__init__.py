"""Typed run configurations (tyro), their checks before anything runs, and the one-line ConfigError."""
