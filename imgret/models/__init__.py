"""Embedding models: the Embedder contract, a registry of model kinds, and the kinds themselves."""
