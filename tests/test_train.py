"""Training the embedded model (tca_core/train.py): its augmentation, fine-tuning and a real step."""

import math

import numpy as np
import pytest
import torch

from tca_core.config import EMBEDDED_MODEL
from tca_core.synthetic import SyntheticVideo
from tca_core.train import _YIQ, Recipe, hue_rotated, initial_model, train, training_batch


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ _YIQ[0]


def test_a_hue_turn_keeps_light_and_dark_and_changes_the_colours():
    image, objects = SyntheticVideo(3).frame(5)
    turned = hue_rotated(image, 2.0)
    assert np.array_equal(hue_rotated(image, 0.0), image)
    assert np.abs(_luma(turned) - _luma(image)).mean() < 1.0  # clipping into 0..255 aside
    inside = np.any([o.mask for o in objects], axis=0)
    assert np.abs(turned[inside].astype(int) - image[inside]).mean() > 10
    # A full turn comes back, up to rounding.
    assert np.abs(hue_rotated(image, 2 * math.pi).astype(int) - image).max() <= 1


def test_training_batches_turn_the_share_of_frames_asked_for():
    plain = training_batch(0, 7, 4, "cpu", hue_share=0.0)
    turned = training_batch(0, 7, 4, "cpu", hue_share=1.0)
    again = training_batch(0, 7, 4, "cpu", hue_share=1.0)
    assert torch.equal(turned[0], again[0])  # the data of a step depends only on (seed, step)
    assert not torch.equal(plain[0], turned[0])
    assert torch.equal(plain[3], turned[3])  # the labels do not change


def test_fine_tuning_starts_from_the_given_weights_and_refuses_another_architecture(small_model, tmp_path):
    shipped = initial_model(Recipe(init=EMBEDDED_MODEL, seed=0))
    again = initial_model(Recipe(init=EMBEDDED_MODEL, seed=1, class_weight=5.0))
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), again.state_dict().values()))
    assert next(shipped.parameters()).dtype == torch.float32
    assert shipped.criterion.weight_dict["loss_cross_entropy"] == 2.0  # HF's default
    assert again.criterion.weight_dict["loss_cross_entropy"] == 5.0
    small_model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"--init {tmp_path}: not the embedded architecture"):
        initial_model(Recipe(init=tmp_path))


def test_a_recipe_refuses_settings_out_of_range():
    with pytest.raises(ValueError, match="hue_share"):
        Recipe(hue_share=1.5)
    with pytest.raises(ValueError, match="steps"):
        Recipe(steps=0)
    with pytest.raises(ValueError, match="class_weight"):
        Recipe(class_weight=0)


def test_two_fine_tuning_steps_write_a_model_that_loads(tmp_path):
    torch.manual_seed(0)
    train(tmp_path, Recipe(steps=2, batch_size=1, checkpoint_every=1, hue_share=1.0, init=EMBEDDED_MODEL))
    tuned = initial_model(Recipe(init=tmp_path / "model"))
    shipped = initial_model(Recipe(init=EMBEDDED_MODEL))
    changed = [not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), shipped.state_dict().values())]
    assert any(changed)
    assert (tmp_path / "model" / "preprocessor_config.json").is_file()
