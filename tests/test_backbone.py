"""The accelerated Swin backbone: exactness of "none", token counts and FLOPs of the clustered path."""

import pytest
import torch
from helpers import SMALL_MODEL_CLUSTERING

from tca_core import clustering
from tca_core.config import METHODS, AccelerationConfig
from tca_core.flops import flops_by_module
from tca_core.model import accelerate, build_model, swin_mask2former_config


@pytest.mark.parametrize("size", [(224, 224), (200, 300), (100, 72)])
def test_none_reproduces_transformers(small_model, reference_model, size):
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference_model(pixel_values=pixels)
        accelerate(small_model, AccelerationConfig(method="none"))
        actual = small_model(pixel_values=pixels)
    assert type(small_model.model.pixel_level_module.encoder).__name__ == "AcceleratedSwinBackbone"
    assert (actual.class_queries_logits - expected.class_queries_logits).abs().max() <= 1e-4
    assert (actual.masks_queries_logits - expected.masks_queries_logits).abs().max() <= 1e-4


def _record_attention_lengths(backbone, stage):
    """Attach hooks that record the token count per window seen by each block's attention in `stage`."""
    lengths = {}
    blocks = backbone.backbone.swin.encoder.layers[stage - 1].blocks
    for index, block in enumerate(blocks):

        def hook(module, args, index=index):
            lengths[index] = args[0].shape[-2]

        block.attention.q_proj.register_forward_pre_hook(hook)
    return lengths


@pytest.mark.parametrize("method", ["clustering", "tca"])
@pytest.mark.parametrize("size", [(224, 224), (180, 260)])
def test_clustered_blocks_run_on_m_tokens(small_model, method, size):
    config = AccelerationConfig(method=method, alpha=1, grid=4)
    backbone = accelerate(small_model, config)
    lengths = _record_attention_lengths(backbone, config.stage)
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, *size)).feature_maps
    window = backbone.window
    assert lengths == {0: window * window, 1: 16, 2: 16, 3: 16}
    assert [m.shape[-2:] for m in maps] == [
        torch.Size([(size[0] + 4 * 2**i - 1) // (4 * 2**i), (size[1] + 4 * 2**i - 1) // (4 * 2**i)]) for i in range(4)
    ]
    assert all(torch.isfinite(m).all() for m in maps)
    assert [s.token_ratio for s in backbone.last_stats] == [16 / 49] * 2


@pytest.fixture(scope="module")
def swin_tiny_model():
    """Mask2Former with Swin-T proportions (random weights): the cost of a real configuration."""
    return build_model(swin_mask2former_config("tiny"))


def test_flop_counts_include_the_attention_that_runs_on_the_cpu_kernel():
    """PyTorch's counter knows only CUDA's fused attention kernels; ours counts the CPU one too."""
    query = torch.randn(2, 3, 49, 16)
    counted = flops_by_module(torch.nn.functional.scaled_dot_product_attention, query, query, query)["Global"]
    assert counted == 2 * (2 * 3 * 49 * 49 * 16) * 2  # q.k and attention.v, a multiply-add each


@pytest.mark.parametrize("method", ["clustering", "tca"])
@pytest.mark.parametrize("alpha,grid", [(3, 5), (1, 5), (2, 4), (0, 3)])
def test_flops_drop_as_token_count_predicts(swin_tiny_model, method, alpha, grid):
    """Backbone FLOPs fall by (1 - M/N) of the clustered blocks' cost, overhead included, within 10%."""
    pixels = torch.randn(1, 3, 224, 320)
    backbone = accelerate(swin_tiny_model, AccelerationConfig(method="none"))
    with torch.no_grad():
        full = flops_by_module(backbone, pixels)
        config = AccelerationConfig(method=method, alpha=alpha, grid=grid)
        backbone.acceleration = config
        reduced = flops_by_module(backbone, pixels)["Global"]
    prefix = f"AcceleratedSwinBackbone.backbone.swin.encoder.layers.{config.stage - 1}.blocks."
    depth = backbone.depths[config.stage - 1]
    clustered_blocks = sum(full[prefix + str(i)] for i in range(alpha, depth))
    ratio = grid**2 / backbone.window**2
    predicted_drop = (1 - ratio) * clustered_blocks
    measured_drop = full["Global"] - reduced
    assert measured_drop > 0
    assert abs(measured_drop - predicted_drop) <= 0.1 * predicted_drop, (measured_drop, predicted_drop)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size", [(24, 24), (40, 56), (33, 47)])
def test_inputs_smaller_than_a_window(small_model, method, size):
    """Stage-3 maps smaller than one window (padding) and odd sizes run and give finite outputs."""
    accelerate(small_model, AccelerationConfig(method=method, alpha=1, grid=4))
    with torch.no_grad():
        out = small_model(pixel_values=torch.randn(2, 3, *size))
    assert torch.isfinite(out.masks_queries_logits).all()
    assert torch.isfinite(out.class_queries_logits).all()


@pytest.mark.parametrize("method", METHODS)
def test_half_precision(small_model, reference_model, method):
    """float16 (the GPU dtype) runs every method on this CPU and stays near float32."""
    pixels = torch.randn(2, 3, 112, 144, generator=torch.Generator().manual_seed(3))
    config = AccelerationConfig(method=method, alpha=1, grid=4, **SMALL_MODEL_CLUSTERING)
    with torch.no_grad():
        accelerate(reference_model, config)
        expected = reference_model(pixel_values=pixels).masks_queries_logits
        accelerate(small_model.to(torch.float16), config)
        actual = small_model(pixel_values=pixels.to(torch.float16)).masks_queries_logits
    assert actual.dtype == torch.float16
    assert torch.isfinite(actual).all()
    error = (actual.float() - expected).abs().mean() / expected.abs().mean()
    assert error < 0.03


def test_invalid_settings_are_rejected(small_model):
    with pytest.raises(ValueError, match="method"):
        AccelerationConfig(method="fast")
    with pytest.raises(ValueError, match="grid"):
        accelerate(small_model, AccelerationConfig(method="tca", grid=9))
    with pytest.raises(ValueError, match="alpha"):
        accelerate(small_model, AccelerationConfig(method="tca", alpha=4))
    with pytest.raises(ValueError, match="stage"):
        accelerate(small_model, AccelerationConfig(method="tca", stage=5))
    with pytest.raises(ValueError, match="reconstruction"):
        AccelerationConfig(method="tca", reconstruction="average")


def test_reconstruction_defaults_by_method(small_model):
    assert accelerate(small_model, AccelerationConfig(method="tca")).acceleration.reconstruction == "residual"
    assert accelerate(small_model, AccelerationConfig(method="clustering")).acceleration.reconstruction == "mix"


@pytest.mark.parametrize("grid", [1, 3])
def test_residual_reconstruction_keeps_token_detail(grid):
    """If the clustered blocks added nothing, residual reconstruction returns every token unchanged,
    while mixing clusters blurs tokens into their clusters; what the blocks add reaches every token."""
    valid = torch.ones(2, 7, 7, dtype=torch.bool)
    geometry = clustering.window_geometry(valid, grid, radius=1)
    x = torch.randn(3, 2, 49, 8)
    centers, _ = clustering.per_frame_clustering(x, geometry, iters=3, temperature=4.0)
    weights = clustering.reconstruction_weights(x, centers, geometry, temperature=4.0, topk=4)
    torch.testing.assert_close(clustering.reconstruct(x, centers, centers, weights, residual=True), x)
    assert (clustering.reconstruct(x, centers, centers, weights, residual=False) - x).abs().mean() > 0.1
    update = torch.randn(8)
    shifted = clustering.reconstruct(x, centers, centers + update, weights, residual=True)
    torch.testing.assert_close(shifted, x + update)  # weights sum to 1 per token
