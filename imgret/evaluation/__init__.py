"""Measuring retrieval quality: metrics and labelled query/database evaluations."""
