"""Datasets: adapters that read each source (hub or local release layout), featurisation into the
training schema, resumable sharded preparation, and the packing sampler for training."""
