"""Frames run at the size the checkpoint's Hugging Face image processor config asks for; masks come
back at the frame's own size."""

import json

import numpy as np
import pytest
from helpers import smooth_video
from transformers import AutoImageProcessor

from tca_core.config import EMBEDDED_MODEL
from tca_core.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPROCESSOR_CONFIG,
    ImageProcessing,
    build_model,
    image_processing,
    preprocessor_config,
)
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.synthetic import CATEGORIES
from tca_core.train import FRAME_SIZE, PROCESSING, export

# Frame sizes of the real sample videos (16:9 twice, 4:3) and of the training videos (3:2).
SAMPLE_SIZES = [(360, 640), (432, 768), (480, 640)]


@pytest.fixture
def checkpoint(small_config, tmp_path):
    """A local checkpoint directory with random weights and no preprocessor config yet."""
    build_model(small_config, seed=0).save_pretrained(tmp_path)
    return tmp_path


def write_config(directory, **config):
    """An HF-format preprocessor_config.json for Mask2FormerImageProcessor."""
    config = {"image_processor_type": "Mask2FormerImageProcessor", **config}
    (directory / PREPROCESSOR_CONFIG).write_text(json.dumps(config))


def model_input_sizes(segmenter):
    """Records the (height, width) of the pixel values each forward pass of the model gets."""
    sizes = []

    def record(module, args, kwargs):
        sizes.append(tuple(kwargs["pixel_values"].shape[-2:]))

    segmenter.model.register_forward_pre_hook(record, with_kwargs=True)
    return sizes


def segment(segmenter, height, width):
    """Frame results of a 2-frame clip of (height, width), task "both" with every query reported."""
    return segmenter.process([Clip("v", 0, smooth_video(2, height, width))])[0]


def test_the_shipped_config_loads_with_auto_image_processor_at_short_side_224():
    processor = AutoImageProcessor.from_pretrained(str(EMBEDDED_MODEL))
    assert (processor.size.shortest_edge, processor.size.longest_edge, processor.size_divisor) == (224, 448, 0)
    assert processor.num_labels == len(CATEGORIES)
    processing = image_processing(EMBEDDED_MODEL)
    assert (processing.shortest_edge, processing.longest_edge) == (224, 448)
    assert processing.image_mean == pytest.approx(IMAGENET_MEAN) and processing.image_std == pytest.approx(IMAGENET_STD)


def test_the_shipped_config_keeps_the_training_size_and_the_sample_videos_short_side():
    processing = image_processing(EMBEDDED_MODEL)
    assert processing.size(*FRAME_SIZE) == FRAME_SIZE
    assert [processing.size(*size) for size in SAMPLE_SIZES] == [(224, 398), (224, 398), (224, 298)]
    assert processing.size(1080, 2560) == (189, 448)  # wider than 2:1: the long side is capped


def test_the_shipped_config_is_what_training_exports():
    shipped = json.loads((EMBEDDED_MODEL / PREPROCESSOR_CONFIG).read_text())
    assert shipped == json.loads(json.dumps(preprocessor_config(PROCESSING, num_labels=len(CATEGORIES))))


def test_a_trained_model_is_exported_with_a_config_that_loads_back(small_config, tmp_path):
    export(build_model(small_config, seed=0), tmp_path)
    assert image_processing(tmp_path) == PROCESSING
    assert VideoSegmenter.from_pretrained(tmp_path).processing_size(360, 640) == (224, 398)


@pytest.mark.parametrize(
    "size, size_divisor",
    [
        ({"shortest_edge": 224, "longest_edge": 448}, 0),
        ({"shortest_edge": 48, "longest_edge": 96}, 0),
        ({"shortest_edge": 224, "longest_edge": 448}, None),  # HF's default divisor, 32
        ({"height": 40, "width": 56}, 0),
        ({"height": 40, "width": 56}, 32),
    ],
)
def test_processing_sizes_are_the_sizes_the_hf_processor_produces(tmp_path, size, size_divisor):
    config = {"size": size} if size_divisor is None else {"size": size, "size_divisor": size_divisor}
    write_config(tmp_path, **config)
    processor = AutoImageProcessor.from_pretrained(str(tmp_path))
    processing = image_processing(tmp_path)
    for height, width in [*SAMPLE_SIZES, FRAME_SIZE, (640, 360), (64, 96), (60, 160), (100, 100), (1080, 2560)]:
        image = np.zeros((height, width, 3), np.uint8)
        theirs = tuple(processor(images=image, return_tensors="pt")["pixel_values"].shape[-2:])
        assert processing.size(height, width) == theirs, (height, width)


def test_a_checkpoint_asking_for_short_side_48_runs_the_model_at_48(checkpoint):
    write_config(checkpoint, size={"shortest_edge": 48, "longest_edge": 96}, size_divisor=0)
    segmenter = VideoSegmenter.from_pretrained(checkpoint, task="both", score_threshold=0.0)
    assert (segmenter.short_side, segmenter.long_side_cap) == (48, 96)
    assert segmenter.processing_size(64, 96) == (48, 72)
    assert segmenter.processing_size(60, 160) == (36, 96)  # long side capped at 96

    sizes = model_input_sizes(segmenter)
    results = segment(segmenter, 64, 96)
    assert sizes == [(48, 72)]
    assert all(r.label_map.shape == (64, 96) and (r.height, r.width) == (64, 96) for r in results)
    instances = [instance for r in results for instance in r.instances]
    assert instances and all(instance.mask.shape == (64, 96) for instance in instances)


def test_a_short_side_alone_in_the_config_keeps_the_aspect_ratio(checkpoint):
    write_config(checkpoint, size={"shortest_edge": 48}, size_divisor=0)
    segmenter = VideoSegmenter.from_pretrained(checkpoint)
    assert (segmenter.short_side, segmenter.long_side_cap) == (48, None)
    assert segmenter.processing_size(60, 160) == (48, 128)


def test_an_explicit_short_side_overrides_the_checkpoints(checkpoint):
    write_config(checkpoint, size={"shortest_edge": 48, "longest_edge": 96}, size_divisor=32, image_mean=[0.5] * 3)
    segmenter = VideoSegmenter.from_pretrained(checkpoint, task="semantic", short_side=32)
    assert (segmenter.short_side, segmenter.long_side_cap) == (32, None)
    assert segmenter.processing_size(60, 160) == (32, 85)  # no cap, no divisor
    assert segmenter.mean.flatten().tolist() == [0.5] * 3  # the checkpoint's normalisation stays

    sizes = model_input_sizes(segmenter)
    results = segment(segmenter, 64, 96)
    assert sizes == [(32, 48)] and all(r.label_map.shape == (64, 96) for r in results)

    native = VideoSegmenter.from_pretrained(checkpoint, native_size=True)
    assert native.short_side is None and native.processing_size(64, 96) == (64, 96)


def test_a_height_width_config_runs_the_model_at_that_fixed_size(checkpoint):
    write_config(checkpoint, size={"height": 40, "width": 56}, size_divisor=0)
    segmenter = VideoSegmenter.from_pretrained(checkpoint, task="semantic")
    assert segmenter.processing == ImageProcessing(height=40, width=56)
    assert segmenter.processing_size(64, 96) == segmenter.processing_size(96, 64) == (40, 56)

    sizes = model_input_sizes(segmenter)
    results = segment(segmenter, 64, 96)
    assert sizes == [(40, 56)] and all(r.label_map.shape == (64, 96) for r in results)


def test_a_checkpoint_without_a_preprocessor_config_runs_at_native_size(checkpoint):
    assert image_processing(checkpoint) == ImageProcessing()
    segmenter = VideoSegmenter.from_pretrained(checkpoint, task="semantic")
    assert segmenter.short_side is None and segmenter.processing_size(64, 96) == (64, 96)
    assert segmenter.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)

    sizes = model_input_sizes(segmenter)
    results = segment(segmenter, 64, 96)
    assert sizes == [(64, 96)] and all(r.label_map.shape == (64, 96) for r in results)


def test_a_segmenter_built_directly_runs_at_native_size_unless_given_a_short_side(small_model):
    assert VideoSegmenter(small_model).processing_size(64, 96) == (64, 96)
    assert VideoSegmenter(small_model, short_side=32).processing_size(64, 96) == (32, 48)


def test_a_config_naming_no_size_gets_the_hf_mask2former_defaults(checkpoint):
    """As AutoImageProcessor reads it: short side 800, long side at most 1333, multiples of 32."""
    (checkpoint / PREPROCESSOR_CONFIG).write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    processing = image_processing(checkpoint)
    assert processing == ImageProcessing(800, 1333, size_divisor=32, image_mean=(0.5,) * 3, image_std=(0.25,) * 3)
    assert processing.size(360, 640) == (768, 1344)  # 750 x 1333, rounded up to multiples of 32


def test_mean_and_std_on_the_0_255_scale_are_restated_for_pixels_in_0_1(checkpoint):
    write_config(checkpoint, do_rescale=False, image_mean=[123.675, 116.28, 103.53], image_std=[58.395, 57.12, 57.375])
    processing = image_processing(checkpoint)
    assert processing.image_mean == pytest.approx(IMAGENET_MEAN) and processing.image_std == pytest.approx(IMAGENET_STD)


def test_an_unreadable_or_unsupported_config_is_an_error_naming_the_file(checkpoint):
    (checkpoint / PREPROCESSOR_CONFIG).write_text("{not json")
    with pytest.raises(ValueError, match=f"{checkpoint / PREPROCESSOR_CONFIG}: cannot load the image processor config"):
        VideoSegmenter.from_pretrained(checkpoint)
    write_config(checkpoint, size={"max_height": 64, "max_width": 64})
    with pytest.raises(ValueError, match=f"{checkpoint / PREPROCESSOR_CONFIG}: unsupported .*max_height"):
        image_processing(checkpoint)


def test_the_job_signature_changes_with_the_checkpoints_normalisation_and_size(checkpoint):
    """A rerun after the checkpoint's preprocessor config changed recomputes its videos."""
    from pipelines.nightly import JobConfig, processing_size

    signatures = []
    for config in (
        dict(size={"shortest_edge": 48}),
        dict(size={"shortest_edge": 48}, image_mean=[0.5, 0.5, 0.5]),
        dict(size={"shortest_edge": 64}, image_mean=[0.5, 0.5, 0.5]),
    ):
        write_config(checkpoint, **config)
        processing_size.cache_clear()  # one process reads a checkpoint's config once
        signatures.append(JobConfig(model=str(checkpoint)).signature())
    assert len(set(signatures)) == 3


@pytest.mark.parametrize("frame_size", [(1080, 1920), (64, 96), (24, 40)])
def test_frames_are_resized_within_one_grey_level_of_a_float_resize(small_model, frame_size):
    """The CPU resizes uint8 frames (shrinking with antialiasing, as a float resize would); its pixels
    stay within one grey level of resizing the frames as floats."""
    import torch
    import torch.nn.functional as F

    segmenter = VideoSegmenter(small_model, short_side=48)
    frames = smooth_video(2, *frame_size)
    got = segmenter._resized(frames)
    size = segmenter.processing_size(*frame_size)
    floats = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    shrinks = size[0] < frame_size[0]
    expected = F.interpolate(floats, size=size, mode="bilinear", antialias=shrinks, align_corners=False)
    assert got.shape == (2, 3, *size) and got.dtype == torch.float32
    assert (got - expected).abs().max() <= 1.0 / 255 + 1e-6
