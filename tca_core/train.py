"""Train the embedded model: a small Swin Mask2Former on generated videos (tca_core.synthetic).

    python -m tca_core.train --out runs/embedded            # about 65 minutes on 2 CPU cores
    python -m tca_core.train --out runs/embedded --resume   # continue after an interruption
    python -m tca_core.train --out runs/more --init tca_core/weights/swin-shapes --steps 3000  # fine-tune

Seeded and resumable: a checkpoint (model, optimizer, step, random states) is written atomically
every `--checkpoint-every` steps, and the data of step k depends only on (seed, k). Uses a GPU when
one is present; on a CPU it computes in bfloat16 where the CPU has it (`autocast`). Besides
Mask2Former's own loss, a training-only per-pixel classifier on the pixel decoder's mask features
(`DenseSemanticHead`, not exported) teaches the backbone shape and texture sooner. At every
checkpoint a small held-out probe (`probe_accuracy`) prints semantic mIoU on each held-out set. The result is a `save_pretrained` directory (float16 safetensors) at OUT/model.
Training videos use seeds below `tca_core.synthetic.HELD_OUT_SEED` (evaluation uses those from it up).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from transformers import Mask2FormerConfig

from .evaluation import ConfusionMatrix
from .model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageProcessing,
    build_model,
    load_model,
    preprocessor_config,
    swin_mask2former_config,
)
from .postprocess import semantic_label_map
from .synthetic import CATEGORIES, HELD_OUT_SEED, HELD_OUT_SETS, SyntheticVideo, held_out_videos, semantic_map

FRAME_SIZE = (224, 336)  # stage 3 is 14x21 tokens: whole 7x7 windows
# What the exported preprocessor config asks of other frames: the training short side, with the long
# side capped at twice that (16:9 and 4:3 frames keep short side 224; docs/model_card.md).
PROCESSING = ImageProcessing(shortest_edge=min(FRAME_SIZE), longest_edge=2 * min(FRAME_SIZE))

# Swin-B/L proportions (2-2-18-2, deep third stage) at a small width, window 7, and a narrow head,
# so that the backbone is most of the model's cost, as in a Swin-L Mask2Former (docs/model_card.md).
EMBEDDED_SWIN = dict(embed_dim=40, depths=[2, 2, 18, 2], num_heads=[1, 2, 4, 8], window_size=7)
EMBEDDED_HEAD = dict(
    num_queries=24,
    decoder_layers=6,
    encoder_layers=2,
    hidden_dim=64,
    feature_size=64,
    mask_feature_size=64,
    dim_feedforward=256,
    encoder_feedforward_dim=256,
    num_attention_heads=4,
    train_num_points=4096,
)
DENSE_WEIGHT = 5.0  # of the per-pixel cross-entropy beside Mask2Former's loss
CLASS_WEIGHT = Mask2FormerConfig().class_weight  # of Mask2Former's classification loss: HF's default


@dataclass(frozen=True)
class Recipe:
    """How a model is trained (the command line's options). hue_share: the share of training frames
    whose hues are turned by a random angle (`hue_rotated`), so that colour says nothing of the
    category (held-out videos are never turned; the shipped model was trained without: 0);
    init: a `save_pretrained` directory to fine-tune from (None: random weights); class_weight: of
    Mask2Former's classification loss (default HF's, `CLASS_WEIGHT`; the masks come easier than the
    categories)."""

    steps: int = 4000
    batch_size: int = 4
    lr: float = 2e-4
    seed: int = 0
    checkpoint_every: int = 100
    hue_share: float = 0.0
    init: Path | None = None
    class_weight: float = CLASS_WEIGHT

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or self.lr <= 0:
            raise ValueError(f"steps, batch size and checkpoint interval must be >= 1 and lr > 0: {self}")
        if self.class_weight <= 0:
            raise ValueError(f"class_weight must be > 0, got {self.class_weight}")
        if not 0 <= self.hue_share <= 1:
            raise ValueError(f"hue_share must be in 0..1, got {self.hue_share}")


PROBE_VIDEOS, PROBE_FRAMES = 4, 2  # per held-out set, at every checkpoint


def embedded_config(**overrides):
    """The embedded model's config; `overrides` set other Mask2Former options (e.g. loss weights)."""
    return swin_mask2former_config(EMBEDDED_SWIN, id2label=CATEGORIES, **{**EMBEDDED_HEAD, **overrides})


def training_batch(seed: int, step: int, batch_size: int, device, hue_share: float = 0.0):
    """Frames of `batch_size` random training videos (a `hue_share` of them hue-turned), their masks
    (background as a segment) and their label maps (B, H, W)."""
    rng = np.random.default_rng((seed, step))
    hue_rng = np.random.default_rng((seed, step, 1))  # its own stream: the videos are those of hue_share 0
    frames, mask_labels, class_labels, label_maps = [], [], [], []
    for _ in range(batch_size):
        video = SyntheticVideo(int(rng.integers(0, HELD_OUT_SEED)), 48, *FRAME_SIZE)
        image, objects = video.frame(int(rng.integers(0, video.num_frames)))
        background = ~np.any([obj.mask for obj in objects], axis=0) if objects else np.ones(FRAME_SIZE, bool)
        masks = [background] + [obj.mask for obj in objects]
        turn, angle = hue_rng.random(), hue_rng.uniform(0, 2 * math.pi)
        if turn < hue_share:
            image = hue_rotated(image, angle)
        frames.append(image)
        mask_labels.append(torch.from_numpy(np.stack(masks)).float().to(device))
        class_labels.append(torch.tensor([0] + [obj.category_id for obj in objects], device=device))
        label_maps.append(semantic_map(objects, *FRAME_SIZE))
    labels = torch.from_numpy(np.stack(label_maps)).long().to(device)
    return normalize(np.stack(frames), device), mask_labels, class_labels, labels


# RGB to YIQ (NTSC): Y is luma, (I, Q) the chroma plane, in which a rotation turns the hue.
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def hue_rotated(image: np.ndarray, angle: float) -> np.ndarray:
    """(H, W, 3) uint8 RGB with every hue turned by `angle` radians; luma (and so the textures'
    light and dark) unchanged, up to clipping into 0-255."""
    turn = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    matrix = np.linalg.inv(_YIQ) @ turn @ _YIQ
    return np.clip(image.astype(np.float32) @ matrix.T.astype(np.float32), 0, 255).round().astype(np.uint8)


def normalize(frames: np.ndarray, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB to the model's (B, 3, H, W) input, ImageNet-normalised."""
    pixels = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (pixels - mean) / std


class DenseSemanticHead(torch.nn.Module):
    """Training only: per-pixel class logits from the pixel decoder's mask features."""

    def __init__(self, channels: int, num_labels: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(channels, num_labels, 1)
        )

    def loss(self, mask_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against (B, H, W) label maps, taken at the features' resolution."""
        small = torch.nn.functional.interpolate(labels[:, None].float(), mask_features.shape[-2:], mode="nearest")
        return torch.nn.functional.cross_entropy(self.layers(mask_features).float(), small[:, 0].long())


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def autocast(device: str):
    """bfloat16 autocast on a GPU or on a CPU that computes in it (1.4x the steps/s here), float32 otherwise."""
    enabled = device == "cuda" or (device == "cpu" and _cpu_has_bf16())
    return torch.autocast(device, dtype=torch.bfloat16, enabled=enabled)


@functools.cache
def _cpu_has_bf16() -> bool:
    """Whether the CPU flags (read once) include a bfloat16 instruction set."""
    try:
        return "bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@torch.no_grad()
def probe_accuracy(model, device, videos: int = PROBE_VIDEOS, frames: int = PROBE_FRAMES) -> dict[str, float]:
    """Semantic mIoU of `model` on the first frames of each held-out set's first videos, with the
    segmenter's semantic inference."""
    was_training = model.training
    model.eval()
    scores = {}
    for set_name in HELD_OUT_SETS:
        confusion = ConfusionMatrix(len(CATEGORIES))
        for video in held_out_videos(set_name, videos, num_frames=frames):
            images, objects = video.frames()
            out = model(pixel_values=normalize(images, device))
            for classes, masks, frame_objects in zip(out.class_queries_logits, out.masks_queries_logits, objects):
                label_map = semantic_label_map(classes.float(), masks.float(), FRAME_SIZE)
                confusion.update(label_map, semantic_map(frame_objects, *FRAME_SIZE))
        scores[set_name] = confusion.miou()
    model.train(was_training)
    return scores


def initial_model(recipe: Recipe):
    """The model training starts from: random (`recipe.seed`), or the weights of the `save_pretrained`
    directory `recipe.init` (fine-tuning), whose architecture must be the embedded one; either way
    with the recipe's loss weights."""
    model = build_model(embedded_config(class_weight=recipe.class_weight), seed=recipe.seed)
    if recipe.init is None:
        return model
    loaded = load_model(recipe.init)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in loaded.state_dict().items()}
    if found != expected:
        differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise ValueError(
            f"--init {recipe.init}: not the embedded architecture ({len(differing)} tensors differ, e.g. {differing[0]})"
        )
    model.load_state_dict(loaded.state_dict())
    return model


def train(out: Path, recipe: Recipe, resume: bool = False):
    """Train as `recipe` says into `out` (checkpoint, log, and at the end the model in OUT/model);
    `resume` continues from the checkpoint there."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    seed, steps, lr = recipe.seed, recipe.steps, recipe.lr
    torch.manual_seed(seed)
    model = initial_model(recipe).float().to(device).train()
    dense = DenseSemanticHead(model.config.mask_feature_size, len(CATEGORIES)).to(device)
    optimizer = torch.optim.AdamW([*model.parameters(), *dense.parameters()], lr=lr, weight_decay=0.05)
    start = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        dense.load_state_dict(state["dense"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        print(f"resumed at step {start}", flush=True)

    log = (out / "train_log.jsonl").open("a")
    begin, window_loss = time.perf_counter(), []
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        pixels, mask_labels, class_labels, labels = training_batch(
            seed, step, recipe.batch_size, device, recipe.hue_share
        )
        with autocast(device):
            output = model(pixel_values=pixels, mask_labels=mask_labels, class_labels=class_labels)
            loss = output.loss + DENSE_WEIGHT * dense.loss(output.pixel_decoder_last_hidden_state, labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *dense.parameters()], 1.0)
        optimizer.step()
        window_loss.append(loss.item())
        if (step + 1) % 20 == 0 or step + 1 == steps:
            rate = (step + 1 - start) / (time.perf_counter() - begin)
            record = dict(step=step + 1, loss=float(np.mean(window_loss)), lr=learning_rate(step, steps, lr))
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(
                f"step {step + 1}/{steps} loss {record['loss']:.3f} lr {record['lr']:.2e} "
                f"{rate:.2f} steps/s, eta {(steps - step - 1) / rate / 60:.0f} min",
                flush=True,
            )
            window_loss = []
        if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == steps:
            state = dict(
                model=model.state_dict(),
                dense=dense.state_dict(),
                optimizer=optimizer.state_dict(),
                step=step + 1,
                torch_rng=torch.get_rng_state(),
            )
            torch.save(state, checkpoint_path.with_suffix(".tmp"))
            checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)
        if (step + 1) % (5 * recipe.checkpoint_every) == 0 or step + 1 == steps:
            probe = probe_accuracy(model, device)
            log.write(json.dumps(dict(step=step + 1, probe_miou=probe)) + "\n")
            print(f"step {step + 1} probe mIoU " + ", ".join(f"{k} {v:.3f}" for k, v in probe.items()), flush=True)

    export(model, out / "model")
    print(f"model written to {out / 'model'}", flush=True)


def export(model, directory: Path):
    """`save_pretrained` in float16 (half the size; loads back as float32) with its preprocessor config
    (Hugging Face's Mask2FormerImageProcessor format, `PROCESSING`)."""
    model.eval().to("cpu", torch.float16).save_pretrained(directory)
    preprocessor = preprocessor_config(PROCESSING, num_labels=len(CATEGORIES))
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the embedded Swin Mask2Former on generated videos")
    parser.add_argument("--out", type=Path, default=Path("runs/embedded"))
    defaults = Recipe()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument(
        "--hue-share", type=float, default=defaults.hue_share, help="share of training frames hue-turned (0..1)"
    )
    parser.add_argument(
        "--class-weight", type=float, default=defaults.class_weight, help="weight of the classification loss"
    )
    parser.add_argument("--init", type=Path, help="fine-tune from this save_pretrained directory (default: random)")
    args = parser.parse_args(argv)
    recipe = Recipe(**{spec.name: getattr(args, spec.name) for spec in fields(Recipe)})
    train(args.out, recipe, args.resume)


if __name__ == "__main__":
    main()
