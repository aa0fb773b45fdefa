"""Learning a model without labels, and sharpening one (fine-tuning, whitening)."""
