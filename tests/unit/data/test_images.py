"""image_folder (decode, convert, resize, bad files, predict) and batch-wise augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scaletrain.config import AugmentConfig, DataConfig, ImageConfig
from scaletrain.data import Preprocessor, build_augmentation, build_data, read_inputs_file
from scaletrain.data.transforms.augment import Augmentation, cutout, random_crop
from scaletrain.errors import ConfigError, DataError


def make_folder(root, *, per_class: int = 10, size=(8, 6), odd_one=None) -> dict:
    """Two classes of random RGB PNGs; returns {path: pixels (H, W, 3)}."""
    generator = np.random.default_rng(0)
    written = {}
    for label in ("circle", "square"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            path = root / label / f"{index:02d}.png"
            Image.fromarray(pixels).save(path)
            written[path] = pixels
    if odd_one is not None:
        odd_one(root)
    return written


def test_image_folder_decodes_pixels_exactly(tmp_path):
    written = make_folder(tmp_path / "img")
    cfg = DataConfig(
        source="image_folder",
        path=str(tmp_path / "img"),
        normalize="none",
        val_fraction=0.0,
        test_fraction=0.0,
    )
    bundle = build_data(cfg, seed=0)
    assert bundle.spec.input_shape == (3, 8, 6) and bundle.spec.class_names == ["circle", "square"]
    expected = torch.from_numpy(np.stack(list(written.values()))).permute(0, 3, 1, 2) / 255.0
    assert torch.equal(bundle.train.inputs, expected.float())
    assert bundle.train.targets.tolist() == [0] * 10 + [1] * 10


def test_modes_are_converted_and_sizes_resized(tmp_path):
    def add_grey_and_big(root):
        Image.fromarray(np.full((8, 6), 200, np.uint8), mode="L").save(root / "circle" / "g.png")
        Image.fromarray(np.zeros((16, 12, 4), np.uint8), mode="RGBA").save(
            root / "square" / "a.png"
        )

    make_folder(tmp_path / "img", odd_one=add_grey_and_big)
    base = DataConfig(source="image_folder", path=str(tmp_path / "img"), normalize="none")
    with pytest.raises(DataError, match=r"a.png: image of shape \(3, 16, 12\).*data.image.size"):
        build_data(base, seed=0)
    resized = build_data(base.model_copy(update={"image": ImageConfig(size=(4, 3))}), seed=0)
    assert resized.spec.input_shape == (3, 4, 3)
    grey = build_data(base.model_copy(update={"image": ImageConfig(size=(8, 6), mode="L")}), seed=0)
    assert grey.spec.input_shape == (1, 8, 6)
    keep = base.model_copy(update={"image": ImageConfig(size=(8, 6), mode="keep")})
    with pytest.raises(DataError, match=r"g.png: image mode 'L' differs from 'RGB'.*mode=RGB"):
        build_data(keep, seed=0)


def test_unreadable_image_bytes_name_the_file(tmp_path):
    make_folder(
        tmp_path / "img",
        odd_one=lambda root: (root / "circle" / "bad.png").write_bytes(b"\x89PNG nope"),
    )
    with pytest.raises(DataError, match=r"circle/bad.png: cannot read as an image"):
        build_data(DataConfig(source="image_folder", path=str(tmp_path / "img")), seed=0)


def test_predict_decodes_new_images_like_training(tmp_path):
    written = make_folder(tmp_path / "img")
    bundle = build_data(DataConfig(source="image_folder", path=str(tmp_path / "img")), seed=0)
    restored = Preprocessor.from_state_dict(
        json.loads(json.dumps(bundle.preprocessor.state_dict()))
    )
    first = next(iter(written))
    inputs = restored.transform(read_inputs_file(first, spec=bundle.spec, feature_columns=None))
    pixels = torch.from_numpy(written[first]).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(inputs, bundle.preprocessor.transform(pixels))
    folder = restored.transform(
        read_inputs_file(tmp_path / "img" / "square", spec=bundle.spec, feature_columns=None)
    )
    assert folder.shape == (10, 3, 8, 6)


def images(batch: int = 6) -> torch.Tensor:
    return torch.arange(batch * 3 * 5 * 4, dtype=torch.float32).reshape(batch, 3, 5, 4) + 1


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    torch.manual_seed(0)
    inputs = images()
    cropped = random_crop(inputs, padding=2)
    padded = F.pad(inputs, (2, 2, 2, 2))
    for sample in range(len(inputs)):
        windows = [
            padded[sample, :, top : top + 5, left : left + 4]
            for top in range(5)
            for left in range(5)
        ]
        assert any(torch.equal(cropped[sample], window) for window in windows)
    assert not torch.equal(cropped, inputs)  # some sample moved


def test_flip_cutout_noise_and_identity():
    inputs = images()
    off = Augmentation(AugmentConfig(), num_classes=2)
    assert off(inputs, torch.zeros(6).long())[0] is inputs
    torch.manual_seed(0)
    flipped, _ = Augmentation(AugmentConfig(hflip=1.0), num_classes=2)(
        inputs, torch.zeros(6).long()
    )
    assert torch.equal(flipped, inputs.flip(-1))
    holes = cutout(inputs, fraction=0.4)
    zeroed = (holes == 0).float().sum(dim=(1, 2, 3))
    assert (zeroed > 0).all() and (zeroed <= 3 * 3 * 3).all()
    assert torch.equal(holes[holes != 0], inputs[holes != 0])
    noisy, _ = Augmentation(AugmentConfig(noise_std=0.5), num_classes=2)(
        inputs, torch.zeros(6).long()
    )
    assert 0.4 < (noisy - inputs).std() < 0.6


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixup_and_cutmix_give_soft_targets_the_loss_accepts(mode):
    torch.manual_seed(1)
    inputs, targets = images(8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    cfg = AugmentConfig(**{f"{mode}_alpha": 1.0})
    mixed, soft = Augmentation(cfg, num_classes=3)(inputs, targets)
    assert soft.shape == (8, 3) and torch.allclose(soft.sum(1), torch.ones(8))
    assert mixed.shape == inputs.shape and not torch.equal(mixed, inputs)
    logits = torch.randn(8, 3)
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(F.cross_entropy(logits, soft), expected)
    from scaletrain.config import LossConfig
    from scaletrain.optim import build_loss

    loss = build_loss(LossConfig(), task="classification", num_outputs=3, class_counts=[3, 3, 2])
    assert torch.allclose(loss(logits, soft), expected)


def test_kornia_rotation_and_jitter_keep_shapes_and_undo_scaling(tmp_path):
    make_folder(tmp_path / "img")
    bundle = build_data(DataConfig(source="image_folder", path=str(tmp_path / "img")), seed=0)
    cfg = AugmentConfig(rotation=15.0, color_jitter=0.3, crop_padding=1)
    augment = build_augmentation(cfg, spec=bundle.spec, preprocessor=bundle.preprocessor)
    torch.manual_seed(0)
    out, targets = augment(bundle.train.inputs, bundle.train.targets)
    assert out.shape == bundle.train.inputs.shape and torch.equal(targets, bundle.train.targets)
    assert torch.isfinite(out).all() and not torch.equal(out, bundle.train.inputs)
    # jitter works on [0, 1] pixels: back in pixel units the result stays in range
    pixels = out * bundle.preprocessor.scale.float() + bundle.preprocessor.shift.float()
    assert pixels.min() > -1e-4 and pixels.max() < 1 + 1e-4
    with pytest.raises(ConfigError, match="data.augment.hflip: augmentation needs images"):
        wine = build_data(DataConfig(name="wine"), seed=0)
        build_augmentation(AugmentConfig(hflip=0.5), spec=wine.spec, preprocessor=wine.preprocessor)
