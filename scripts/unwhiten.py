"""A copy of a trained model without its PCA-whitening (same encoder weights), to measure what
the whitening does: `python scripts/unwhiten.py MODEL COPY`, then `imgret evaluate COPY ...`."""

from __future__ import annotations

import sys
from dataclasses import replace

from imgret.models.autoencoder import ConvAutoencoder, load_model, save_model


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    model, doc = load_model(src)
    plain = ConvAutoencoder(replace(model.config, whiten_dim=0))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("whiten_")}
    plain.load_state_dict(state)
    meta = {k: v for k, v in doc.items() if k not in ("format", "version", "arch", "model")}
    save_model(plain, dst, {**meta, "unwhitened_from": src})
    print(f"{dst}: {src} without its whitening ({plain.embedding_dim}-d)")


if __name__ == "__main__":
    main()
