"""The pixel decoder's deformable attention summed level by level (tca_core.head) against
`transformers`' own function, and its swap in and out of the Mask2Former module."""

import torch
from transformers.models.mask2former import modeling_mask2former

from tca_core.head import _ORIGINAL, deformable_attention, level_by_level


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 11), (14, 21), (28, 42)]
    batch, heads, dim, points = 2, 4, 16, 4
    length = sum(h * w for h, w in shapes)
    value = torch.randn(batch, length, heads, dim, generator=generator)
    locations = torch.rand(batch, length, heads, len(shapes), points, 2, generator=generator) * 1.2 - 0.1
    weights = torch.randn(batch, length, heads, len(shapes) * points, generator=generator).softmax(-1)
    return value, shapes, locations, weights.view(batch, length, heads, len(shapes), points)


def test_level_by_level_equals_the_transformers_function_on_every_level_and_point():
    value, shapes, locations, weights = _inputs()
    expected = _ORIGINAL(value, shapes, locations, weights)
    got = level_by_level(value, shapes, locations, weights)
    assert got.shape == expected.shape == (2, value.shape[1], 64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    weights[..., 2, :] = 0  # a level that does not count: the two still agree
    torch.testing.assert_close(
        level_by_level(value, shapes, locations, weights), _ORIGINAL(value, shapes, locations, weights)
    )


def test_the_swap_lasts_only_while_a_pass_runs_even_nested():
    assert modeling_mask2former.multi_scale_deformable_attention is _ORIGINAL
    with deformable_attention():
        with deformable_attention():
            assert modeling_mask2former.multi_scale_deformable_attention is level_by_level
        assert modeling_mask2former.multi_scale_deformable_attention is level_by_level
    assert modeling_mask2former.multi_scale_deformable_attention is _ORIGINAL
    try:
        with deformable_attention():
            raise RuntimeError("a pass that fails")
    except RuntimeError:
        pass
    assert modeling_mask2former.multi_scale_deformable_attention is _ORIGINAL


def test_the_embedded_model_gives_the_same_outputs_with_either_deformable_attention():
    from tca_core.config import EMBEDDED_MODEL
    from tca_core.segmenter import VideoSegmenter
    from tca_core.synthetic import HELD_OUT_SEED, SyntheticVideo

    segmenter = VideoSegmenter.from_pretrained(str(EMBEDDED_MODEL), short_side=224)
    pixels = segmenter._preprocess(SyntheticVideo(HELD_OUT_SEED, 2, camera="static").frames()[0])
    with torch.inference_mode():
        theirs = segmenter.model(pixel_values=pixels)
        with deformable_attention():
            ours = segmenter.model(pixel_values=pixels)
    torch.testing.assert_close(ours.masks_queries_logits, theirs.masks_queries_logits, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ours.class_queries_logits, theirs.class_queries_logits, rtol=1e-4, atol=1e-4)
