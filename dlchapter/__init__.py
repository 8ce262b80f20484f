"""dlchapter: a deep-learning textbook chapter as pure-functional JAX/Flax code."""

__version__ = "0.1.0"
