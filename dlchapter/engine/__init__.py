"""The training engine: one Trainer loop, its steps, losses, metrics, optimizers, precision, data
parallelism and the many-models program, all built from the same pieces."""
