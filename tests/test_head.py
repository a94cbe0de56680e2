"""The pixel decoder's deformable attention laid out for a CPU (tca_core.head) against
`transformers`' own forward, and its swap in and out of the Mask2Former module."""

import torch

from tca_core.head import _ATTENTION, _ORIGINAL, deformable_attention, summed_forward


def _module_and_inputs(seed: int = 0):
    """A pixel-decoder attention module with random weights (the embedded model's sizes: 64 channels,
    4 heads, 3 levels, 4 points) and inputs whose sampling locations fall inside and outside the maps."""
    torch.manual_seed(seed)
    module = _ATTENTION(embed_dim=64, num_heads=4, n_levels=3, n_points=4).eval()
    with torch.no_grad():
        for linear in (module.sampling_offsets, module.attention_weights):
            linear.weight.normal_(std=0.5)
            linear.bias.normal_(std=2.0)
    shapes = [(7, 11), (14, 21), (28, 42)]
    batch, length = 2, sum(h * w for h, w in shapes)
    hidden = torch.randn(batch, length, 64)
    mask = torch.rand(batch, length) < 0.1  # True: a padded value, zeroed
    inputs = dict(
        hidden_states=hidden,
        attention_mask=mask,
        encoder_hidden_states=hidden,
        encoder_attention_mask=mask,
        position_embeddings=torch.randn(batch, length, 64),
        reference_points=torch.rand(batch, length, len(shapes), 2),
        spatial_shapes_list=shapes,
        level_start_index=torch.tensor([0, 77, 371]),
    )
    return module, inputs


def test_the_summed_forward_equals_the_transformers_forward_in_outputs_and_weights():
    module, inputs = _module_and_inputs()
    with torch.no_grad():
        expected, expected_weights = _ORIGINAL(module, **inputs)
        got, weights = summed_forward(module, **inputs)
    assert got.shape == expected.shape == (2, inputs["hidden_states"].shape[1], 64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-6, atol=1e-7)
    with torch.no_grad():  # a level that does not count: the two still agree
        module.attention_weights.bias.view(4, 3, 4)[:, 2] = -1e4
        torch.testing.assert_close(summed_forward(module, **inputs)[0], _ORIGINAL(module, **inputs)[0])


def test_the_swap_lasts_only_while_a_pass_runs_even_nested():
    assert _ATTENTION.forward is _ORIGINAL
    with deformable_attention():
        with deformable_attention():
            assert _ATTENTION.forward is summed_forward
        assert _ATTENTION.forward is summed_forward
    assert _ATTENTION.forward is _ORIGINAL
    try:
        with deformable_attention():
            raise RuntimeError("a pass that fails")
    except RuntimeError:
        pass
    assert _ATTENTION.forward is _ORIGINAL


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
