"""The chapter's teaching code: activations, backpropagation by hand, non-neural baselines and the
concept experiments' figures."""
