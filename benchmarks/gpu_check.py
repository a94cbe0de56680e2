"""The GPU check (benchmarks/gpu_check.sh runs it): frames/s of `none`, `clustering` and `tca` on
real-size Swin Mask2Former configs, and the inference actor's loop without Ray.

1. Throughput: for each preset (random weights: cost does not depend on trained weights) at
   `--size`, several videos per forward pass (`--videos` clips of `--clip-frames` frames, each video
   its own memory), the methods interleaved round by round; backbone and whole model, timed with
   CUDA synchronisation. Clustering and TCA run at the generic defaults (docs/tca.md).
2. The actor's loop: decoding in one thread, segmenting in the caller, RLE encoding in another, over
   the sample videos, with GPU utilisation sampled from `nvidia-smi` every 200 ms.

It needs torch, transformers and pycocotools (tca_core) and OpenCV or PyAV for decoding; it imports
neither Ray nor the job. Runs on CPU too (`--device cpu`, for a smoke test).

    python -m benchmarks.gpu_check --out out/gpu-check
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch

from tca_core import rle
from tca_core.config import AccelerationConfig
from tca_core.model import build_model, swin_mask2former_config
from tca_core.segmenter import Clip, VideoSegmenter

from .backbone_cost import drifting_scene

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
METHODS = {name: AccelerationConfig(method=name) for name in ("none", "clustering", "tca")}


class Timer:
    """Seconds of the backbone's forward passes (hooks) and of whole calls, synchronised on CUDA."""

    def __init__(self, backbone: torch.nn.Module, device: torch.device):
        self.device, self.backbone_seconds, self._begin = device, 0.0, 0.0
        backbone.register_forward_pre_hook(lambda module, args: self._start())
        backbone.register_forward_hook(lambda module, args, output: self._stop())

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _start(self):
        self.sync()
        self._begin = time.perf_counter()

    def _stop(self):
        self.sync()
        self.backbone_seconds += time.perf_counter() - self._begin


def _segmenter(preset: str, device: str, dtype: torch.dtype) -> VideoSegmenter:
    """Random weights at native size (the frames are made at --size); every instance kept, so that
    the encoding thread has the masks a trained model would give it to encode."""
    model = build_model(swin_mask2former_config(preset), seed=0).to(device, dtype)
    return VideoSegmenter(model, score_threshold=0.0)


def throughput(preset: str, args) -> dict:
    """frames/s of each method, backbone and whole model: medians over the rounds."""
    segmenter = _segmenter(preset, args.device, args.dtype)
    timer = Timer(segmenter.backbone, segmenter.device)
    frames = drifting_scene(args.clip_frames * (args.rounds + 1), *args.size)
    pixels = ((frames - frames.min()) / (frames.max() - frames.min()) * 255).byte().permute(0, 2, 3, 1).numpy()
    rates = {name: {"model": [], "backbone": []} for name in METHODS}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        start = round_index * args.clip_frames
        clip = pixels[start : start + args.clip_frames]
        for name, config in METHODS.items():
            segmenter.acceleration = config
            clips = [Clip(f"{name}/{v}", start, clip) for v in range(args.videos)]
            timer.backbone_seconds = 0.0
            timer.sync()
            begin = time.perf_counter()
            segmenter.process(clips)
            timer.sync()
            seconds = time.perf_counter() - begin
            if round_index:
                rates[name]["model"].append(args.videos * args.clip_frames / seconds)
                rates[name]["backbone"].append(args.videos * args.clip_frames / timer.backbone_seconds)
    return {name: {part: statistics.median(values) for part, values in r.items()} for name, r in rates.items()}


def _decoded(path: Path, limit: int):
    """RGB frames of a video, with OpenCV when it is there, else PyAV."""
    try:
        import cv2
    except ImportError:
        import av

        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index >= limit:
                    return
                yield frame.to_ndarray(format="rgb24")
        return
    capture = cv2.VideoCapture(str(path))
    for _ in range(limit):
        ok, frame = capture.read()
        if not ok:
            break
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    capture.release()


def _decode_clips(path: Path, clip_frames: int, limit: int, out: queue.Queue):
    """A decoding thread (one per video, so that clips of several videos wait side by side): the
    video's clips in order, then None."""
    batch, start = [], 0
    for frame in _decoded(path, limit):
        batch.append(frame)
        if len(batch) == clip_frames:
            out.put(Clip(path.name, start, np.stack(batch)))
            start, batch = start + clip_frames, []
    if batch:
        out.put(Clip(path.name, start, np.stack(batch)))
    out.put(None)


def _encode(results: queue.Queue, counts: dict):
    """The encoding thread: every instance mask to COCO RLE."""
    while (frames := results.get()) is not None:
        for result in frames:
            counts["frames"] += 1
            counts["masks"] += sum(1 for instance in result.instances if rle.encode(instance.mask))


def gpu_utilisation(stop: threading.Event, samples: list):
    """Samples nvidia-smi's GPU utilisation (%) every 200 ms until `stop`; nothing without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return
    command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as smi:
        while not stop.is_set() and (line := smi.stdout.readline()):
            samples.append(float(line.split(",")[0]))
        smi.terminate()


def actor_loop(args) -> dict:
    """Decode, segment (one clip of each of up to --videos videos per pass) and encode the sample
    videos as the inference actor does, without Ray."""
    segmenter = _segmenter(args.presets[0], args.device, args.dtype)
    segmenter.acceleration = METHODS["tca"]
    paths = sorted(p for p in VIDEOS.glob("*") if p.suffix in (".mp4", ".mkv"))
    clips, results, counts, samples = queue.Queue(4 * args.videos), queue.Queue(16), {"frames": 0, "masks": 0}, []
    stop = threading.Event()
    decoders = [
        threading.Thread(target=_decode_clips, args=(p, args.clip_frames, args.loop_frames, clips)) for p in paths
    ]
    encoder = threading.Thread(target=_encode, args=(results, counts))
    for thread in [*decoders, encoder, threading.Thread(target=gpu_utilisation, args=(stop, samples), daemon=True)]:
        thread.start()
    begin, batch, running = time.perf_counter(), [], len(decoders)
    while running:
        if (clip := clips.get()) is None:
            running -= 1
            continue
        if len(batch) == args.videos or any(c.video_id == clip.video_id for c in batch):
            results.put(sum(segmenter.process(batch), []))
            batch = []
        batch.append(clip)
    if batch:
        results.put(sum(segmenter.process(batch), []))
    results.put(None)
    encoder.join()
    seconds = time.perf_counter() - begin
    stop.set()
    utilisation = statistics.mean(samples) if samples else None
    return dict(
        videos=len(paths),
        frames=counts["frames"],
        masks=counts["masks"],
        seconds=seconds,
        frames_per_second=counts["frames"] / seconds,
        gpu_utilisation_percent=utilisation,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "large"])
    parser.add_argument("--size", nargs=2, type=int, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--videos", type=int, default=4, help="videos per forward pass")
    parser.add_argument("--clip-frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, methods interleaved")
    parser.add_argument("--loop-frames", type=int, default=256, help="frames of each sample video in the loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("out/gpu-check"))
    args = parser.parse_args(argv)
    args.dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    report = dict(
        device=device,
        dtype=str(args.dtype),
        size=args.size,
        videos_per_pass=args.videos,
        clip_frames=args.clip_frames,
        torch=torch.__version__,
    )
    report["throughput"] = {preset: throughput(preset, args) for preset in args.presets}
    for preset, rates in report["throughput"].items():
        for name, rate in rates.items():
            print(f"{preset} {name}: whole model {rate['model']:.1f} frames/s, backbone {rate['backbone']:.1f}")
    report["actor_loop"] = actor_loop(args)
    print("actor loop:", json.dumps(report["actor_loop"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
