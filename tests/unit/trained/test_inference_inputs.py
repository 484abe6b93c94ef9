"""Raw array inputs for predict/evaluate: flat rows or the trained sample shape (give or take
size-1 axes) scale alike; another arrangement of the values is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaletrain.data import DataSpec, Preprocessor
from scaletrain.errors import UserError
from scaletrain.trained.inference import PreprocessedModel, preprocess_inputs


def _spec(shape: tuple[int, ...]) -> DataSpec:
    return DataSpec("classification", shape, torch.float32, 10, None, None, is_image=True)


def _image_preprocessor(channels: int) -> Preprocessor:
    shift = torch.arange(1, channels + 1, dtype=torch.float64).reshape(channels, 1, 1)
    return Preprocessor("standardize", shift=shift, scale=shift * 2, is_image=True)


@pytest.mark.parametrize("layout", [(64,), (8, 8), (1, 8, 8), (8, 8, 1)])
def test_digits_images_flat_or_shaped_scale_per_channel(layout):
    images = np.random.default_rng(0).random((5, 8, 8)) * 16  # (N, H, W), values 0..16
    expected = torch.from_numpy((images[:, None] - 1.0) / 2.0).float()  # float64 reference
    got = preprocess_inputs(
        images.reshape(5, *layout), spec=_spec((1, 8, 8)), preprocessor=_image_preprocessor(1)
    )
    assert got.shape == (5, 1, 8, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_channels_last_images_for_a_channels_first_run_are_refused():
    spec, preprocessor = _spec((3, 4, 4)), _image_preprocessor(3)
    assert preprocess_inputs(np.ones((2, 48)), spec=spec, preprocessor=preprocessor).shape == (
        2,
        3,
        4,
        4,
    )
    with pytest.raises(UserError, match=r"samples of shape \(4, 4, 3\); the run was trained on"):
        preprocess_inputs(np.ones((2, 4, 4, 3)), spec=spec, preprocessor=preprocessor)


@pytest.mark.parametrize("layout", [(64,), (1, 8, 8)])
def test_the_preprocessing_module_scales_flat_rows_of_an_image_run_per_channel(layout):
    images = np.random.default_rng(1).random((5, 8, 8)) * 16
    expected = torch.from_numpy((images[:, None] - 1.0) / 2.0).float()  # float64 reference
    module = PreprocessedModel(torch.nn.Identity(), _image_preprocessor(1), spec=_spec((1, 8, 8)))
    got = module(torch.from_numpy(images.reshape(5, *layout)).float())
    assert got.shape == (5, 1, 8, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
