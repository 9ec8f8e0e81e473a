"""Training methods: wrap a network, forward(batch) returns the loss."""
