"""Flax linen modules for the chapter's networks."""
