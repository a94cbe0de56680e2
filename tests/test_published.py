"""Published Mask2Former Swin checkpoints, rebuilt from their config.json and preprocessor_config.json
values with random weights (the weights can't be downloaded here): they load with `from_pretrained`
and `AutoImageProcessor`, run through the segmenter with every method, through the nightly job and
through the endpoint, and our post-processing gives what `transformers`' own gives on the same outputs."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import torch
from helpers import free_port
from transformers import AutoImageProcessor, Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from pipelines.nightly import JobConfig, run_job
from pipelines.output import decode_frames
from pipelines.video_io import open_video, write_mp4
from tca_core.config import METHODS, PREPROCESSOR_CONFIG, AccelerationConfig
from tca_core.model import tuned_acceleration
from tca_core.segmenter import Clip, VideoSegmenter

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"

# Mask2Former's head as the public checkpoints have it (the detectron2 configs their conversion read).
PUBLISHED_HEAD = dict(
    hidden_dim=256,
    feature_size=256,
    mask_feature_size=256,
    encoder_layers=6,
    decoder_layers=10,
    dim_feedforward=2048,
    encoder_feedforward_dim=1024,
    num_attention_heads=8,
    common_stride=4,
    feature_strides=[4, 8, 16, 32],
    dropout=0.0,
    pre_norm=False,
    enforce_input_projection=False,
    no_object_weight=0.1,
    class_weight=2.0,
    mask_weight=5.0,
    dice_weight=5.0,
    train_num_points=12544,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
    use_auxiliary_loss=True,
)

# Swin-T at 224 with window 7; Swin-B and Swin-L pretrained at 384 with window 12. Each is run with
# one method through the job and the endpoint, so that together they cover all three.
PUBLISHED = {
    "facebook/mask2former-swin-tiny-coco-instance": dict(
        swin=dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, image_size=224),
        num_queries=100,
        num_labels=80,
        dataset="coco",
        method="none",
    ),
    "facebook/mask2former-swin-base-IN21k-ade-semantic": dict(
        swin=dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, image_size=384),
        num_queries=100,
        num_labels=150,
        dataset="ade20k",
        method="clustering",
    ),
    "facebook/video-mask2former-swin-large-youtubevis-2021-instance": dict(
        swin=dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, image_size=384),
        num_queries=200,
        num_labels=40,
        dataset="ytvis-2021",
        method="tca",
    ),
}
assert {spec["method"] for spec in PUBLISHED.values()} == set(METHODS)

# The image processor config of the public checkpoints: 384x384 (transformers' post-processing
# assumes it for every one of them), multiples of 32, ImageNet's mean and std as float32 over 255.
PUBLISHED_PREPROCESSOR = dict(
    image_processor_type="Mask2FormerImageProcessor",
    do_resize=True,
    size={"height": 384, "width": 384},
    size_divisor=32,
    resample=2,
    do_rescale=True,
    rescale_factor=0.00392156862745098,
    do_normalize=True,
    image_mean=[0.48500001430511475, 0.4560000002384186, 0.4059999883174896],
    image_std=[0.2290000021457672, 0.2239999920129776, 0.22499999403953552],
    ignore_index=255,
    do_reduce_labels=False,
)


def published_labels(name: str) -> dict[int, str]:
    """The checkpoint's id2label: names made from its dataset (the real names don't matter here)."""
    spec = PUBLISHED[name]
    return {i: f"{spec['dataset']}-{i:03d}" for i in range(spec["num_labels"])}


def published_config(name: str) -> Mask2FormerConfig:
    spec = PUBLISHED[name]
    id2label = published_labels(name)
    backbone = SwinConfig(**spec["swin"], drop_path_rate=0.3, out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(
        backbone_config=backbone,
        num_queries=spec["num_queries"],
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        **PUBLISHED_HEAD,
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Each published configuration as a local checkpoint directory in Hugging Face's layout, with
    random weights (float16 on disk, as small as it gets)."""
    root = tmp_path_factory.mktemp("published")
    paths = {}
    for name, spec in PUBLISHED.items():
        torch.manual_seed(0)
        path = root / name.split("/")[1]
        Mask2FormerForUniversalSegmentation(published_config(name)).to(torch.float16).save_pretrained(path)
        processor = dict(PUBLISHED_PREPROCESSOR, num_labels=spec["num_labels"])
        (path / PREPROCESSOR_CONFIG).write_text(json.dumps(processor, indent=2))
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def segmenters(checkpoints) -> dict[str, VideoSegmenter]:
    """Each checkpoint loaded once with `from_pretrained` (task both); tests set its acceleration."""
    return {name: VideoSegmenter.from_pretrained(path, task="both") for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory) -> Path:
    """The first 2 frames of a real sample video (640x480), as an mp4."""
    frames, _ = open_video(VIDEOS / "walk.mkv").read(0, 2)
    path = tmp_path_factory.mktemp("clip") / "walk-2.mp4"
    write_mp4(path, frames, fps=15)
    return path


def _frames(path: Path) -> np.ndarray:
    video = open_video(path)
    return video.read(0, video.info.frames)[0]


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_published_config_loads_with_its_labels_and_its_image_processor(checkpoints, segmenters, sample_clip, name):
    path, segmenter = checkpoints[name], segmenters[name]
    spec = PUBLISHED[name]
    assert segmenter.labels == published_labels(name)
    assert segmenter.model.config.backbone_config.window_size == spec["swin"]["window_size"]

    processor = AutoImageProcessor.from_pretrained(str(path))
    frame = _frames(sample_clip)[0]
    theirs = processor(images=frame, return_tensors="pt")["pixel_values"]
    assert segmenter.processing_size(*frame.shape[:2]) == tuple(theirs.shape[-2:]) == (384, 384)
    ours = segmenter._preprocess(frame[None])
    # The same normalisation; the resampling filters differ a little (HF's PIL-style resize vs torch's).
    assert (ours - theirs).abs().mean() < 0.05


def _captured_outputs(model, sharpen: float):
    """Keeps the model's last outputs, with the class logits scaled by `sharpen` (random weights give
    near-uniform classes; scaled, some queries pass a 0.5 score and the instance comparison has
    something to compare)."""
    captured = {}

    def hook(module, args, output):
        output.class_queries_logits = output.class_queries_logits * sharpen
        captured["outputs"] = output
        return output

    return captured, model.register_forward_hook(hook)


@pytest.mark.parametrize("name", PUBLISHED)
def test_post_processing_equals_transformers_on_the_same_outputs(checkpoints, segmenters, sample_clip, name):
    segmenter = segmenters[name]
    segmenter.acceleration, segmenter.score_threshold = AccelerationConfig(method="none"), 0.5
    captured, hook = _captured_outputs(segmenter.model, sharpen=40.0)
    frames = _frames(sample_clip)[:1]
    try:
        (result,) = segmenter.process([Clip("post", 0, frames)])[0]
    finally:
        hook.remove()
        segmenter.drop("post")
    outputs, size = captured["outputs"], [frames.shape[1:3]]
    processor = AutoImageProcessor.from_pretrained(str(checkpoints[name]))

    semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=size)[0]
    assert np.array_equal(result.label_map, semantic.numpy())

    theirs = processor.post_process_instance_segmentation(
        outputs, threshold=0.5, target_sizes=size, return_binary_maps=True
    )[0]
    their_masks = theirs["segmentation"]
    expected = sorted(
        (info["label_id"], info["score"], their_masks[k].bool().numpy().tobytes())
        for k, info in enumerate(theirs["segments_info"])
    )
    found = sorted((i.category_id, round(i.score, 6), i.mask.tobytes()) for i in result.instances)
    assert len(expected) >= 2, "the comparison needs instances"
    assert [(label, mask) for label, _, mask in found] == [(label, mask) for label, _, mask in expected]
    assert [score for _, score, _ in found] == pytest.approx([score for _, score, _ in expected], abs=2e-6)


@pytest.mark.parametrize("name", PUBLISHED)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_a_published_config(checkpoints, segmenters, sample_clip, name, method):
    acceleration = tuned_acceleration(checkpoints[name], method)
    assert acceleration == AccelerationConfig(method=method)  # no acceleration.json: the generic defaults
    segmenter = segmenters[name]
    segmenter.acceleration = acceleration
    results = segmenter.process([Clip(method, 0, _frames(sample_clip))])[0]
    segmenter.drop(method)
    assert [r.frame_index for r in results] == [0, 1]
    assert all(r.label_map.shape == (480, 640) for r in results)
    if method != "none":
        assert all(r.stats is not None for r in results)


@pytest.fixture(scope="module")
def ray_with_serve():
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_published_config_runs_through_the_nightly_job(ray_with_serve, checkpoints, sample_clip, tmp_path, name):
    spec = PUBLISHED[name]
    config = JobConfig(
        input=str(sample_clip.parent),
        output=str(tmp_path / "out"),
        model=str(checkpoints[name]),
        method=spec["method"],
        task="both",
        score_threshold=0.0,
        chunk_frames=2,
        clip_frames=2,
        cpus_per_actor=1.0,
    )
    summary = run_job(config, progress=False)
    assert summary["videos_ok"] == 1, summary
    manifest = pq.read_table(next((tmp_path / "out" / "manifests").glob("*.parquet"))).to_pylist()
    assert json.loads(manifest[0]["settings"])["acceleration"]["method"] == spec["method"]
    masks = pq.read_table(tmp_path / "out" / "masks" / f"{sample_clip.name}.parquet")
    frames = decode_frames(masks)
    assert sorted(frames) == [0, 1]
    names = set(published_labels(name).values())
    assert set(masks.column("category_name").to_pylist()) <= names


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_published_config_runs_through_the_endpoint(ray_with_serve, checkpoints, sample_clip, name):
    from ray import serve

    from deploy.jobs import NightlyJobs
    from deploy.schemas import ServiceOptions
    from deploy.serve_app import SegmentService

    spec = PUBLISHED[name]
    options = ServiceOptions(
        model=str(checkpoints[name]),
        method=spec["method"],
        task="both",
        score_threshold=0.0,
        torch_threads=2,
        input_prefixes=[str(sample_clip.parent)],
        output_prefixes=[str(sample_clip.parent / "out")],
    )
    app = f"published-{spec['dataset']}"
    deployment = SegmentService.options(ray_actor_options={"num_cpus": 0.5})
    serve.run(deployment.bind(options, NightlyJobs.bind(options)), name=app, route_prefix=f"/{app}")
    try:
        base = f"{ray_with_serve}/{app}"
        assert requests.get(f"{base}/healthz", timeout=60).json()["method"] == spec["method"]
        response = requests.post(f"{base}/segment", json={"uri": str(sample_clip)}, timeout=600)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["height"], body["width"]) == (480, 640)
        assert [f["frame_index"] for f in body["frames"]] == [0, 1]
        names = set(published_labels(name).values())
        assert {mask["category"] for f in body["frames"] for mask in f["semantic"]} <= names
    finally:
        serve.delete(app)
