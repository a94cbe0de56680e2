"""`tca-segment`: the project's command line.

Each subcommand imports what it needs when it runs: reading a run's output (`validate`,
`export-ytvis`, `render`) imports neither the job (Ray) nor the model (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tca_core.config import METHODS
from tca_core.synthetic import HELD_OUT_SEED, HELD_OUT_SETS

from .options import MODEL_KNOBS


def demo(args) -> int:
    """Generate (or take) a video, run the batch job on it with local Ray, render, summarise."""
    from .generate import write_generated
    from .nightly import JobConfig, reuse_line, run_job
    from .output import read_masks
    from .render import render

    out: Path = args.out
    seed = None
    if args.input is None:
        seed = HELD_OUT_SEED + args.seed
        write_generated(out / "input", [seed], num_frames=args.frames)
        path = out / "input" / "videos" / f"{seed}.mp4"
        print(f"generated a held-out video (seed {seed}): {path}")
    else:
        path = args.input
    if not path.is_file():
        print(f"no such video file: {path}")
        return 2
    config = JobConfig(  # the job lists a prefix: this video's folder, matching only this file
        input=str(path.parent),
        include=[path.name],
        output=str(out),
        model=args.model,
        method=args.method,
        acceleration=args.acceleration,
        task="both",
        clip_frames=args.clip_frames,
        force=True,
        ray_address="local",  # a Ray instance of its own, whatever else runs on the machine
        torch_threads=os.cpu_count(),  # one actor on this machine: inference may use every core
    )
    summary = run_job(config)
    if summary["videos_ok"] != 1:
        print(f"the job failed: {summary['failures']}")
        return 1
    masks_path = out / "masks" / f"{path.name}.parquet"
    overlay_path, sheet_path = render(path, masks_path, out)

    print(
        f"frames: {summary['frames']} in {summary['seconds']:.1f} s, {summary['frames_per_second']:.2f} frames/s "
        f"(job with local Ray, {args.method}, this machine)"
    )
    if args.method != "none":
        line = f"token reduction: the clustered blocks run on {summary['token_ratio']:.0%} of the tokens"
        if summary["tca_reassigned"] is not None:
            line += f"; TCA reassigned {summary['tca_reassigned']:.1%} of tokens per continued frame"
        print(line + reuse_line(summary))
    elif reuse_line(summary):
        print(reuse_line(summary)[2:])
    if seed is not None:
        accuracy = _accuracy_against_truth(seed, args.frames, read_masks(masks_path))  # a short video
        per_class = ", ".join(f"{name} {iou:.2f}" for name, iou in accuracy["per_class_iou"].items())
        print(
            f"accuracy on this generated video: mIoU {accuracy['miou']:.3f} ({per_class}), video AP {accuracy['ap']:.3f}"
        )
        print("(one video: a class it lacks but the model predicts on a few pixels scores 0; see docs/model_card.md)")
    print(f"output: {out / 'masks'}, {out / 'frames'}, {out / 'manifests'}")
    print(f"rendered: {overlay_path}, {sheet_path}")
    return 0


def _accuracy_against_truth(seed: int, num_frames: int, masks) -> dict:
    import numpy as np

    from tca_core.evaluation import Scoreboard
    from tca_core.synthetic import CATEGORIES, SyntheticVideo

    from .output import decode_frames

    video = SyntheticVideo(seed, num_frames)
    shape = (video.height, video.width)
    frames = decode_frames(masks)
    label_maps = [frames[t].label_map(*shape) if t in frames else np.zeros(shape, np.int32) for t in range(num_frames)]
    instances = [
        [(i, c, score, mask) for i, c, _, score, mask in frames[t].instances] if t in frames else []
        for t in range(num_frames)
    ]
    board = Scoreboard(CATEGORIES)
    board.add_video(str(seed), label_maps, instances, video.frames()[1], shape)
    return board.metrics()


def evaluate(args) -> int:
    """mIoU and video AP of the model on each held-out set of generated videos (or `--set`'s), with
    95% bootstrap intervals over the videos; with --against, also those of a second method on the
    same videos and the paired differences; with --sheets, each set's first video drawn with its
    ground truth beside the model's masks."""
    from tca_core.segmenter import VideoSegmenter

    segmenter = VideoSegmenter.from_pretrained(args.model, task="both")  # loaded once, for every method
    report = {}
    for set_name in [args.set] if args.set else list(HELD_OUT_SETS):
        report[set_name] = _evaluate_set(segmenter, set_name, args)
        if args.sheets:
            _draw_sheet(segmenter, set_name, args)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _evaluate_set(segmenter, set_name: str, args) -> dict:
    """One held-out set's metrics for --method (and --against, paired)."""
    from tqdm import tqdm

    from tca_core.evaluation import bootstrap_interval, paired_difference, score_generated
    from tca_core.model import tuned_acceleration
    from tca_core.synthetic import held_out_videos

    videos = held_out_videos(set_name, args.videos, args.frames)
    boards, report = {}, {}
    for method in [args.method] + ([args.against] if args.against else []):
        segmenter.acceleration = tuned_acceleration(args.model, method, args.acceleration)
        bar = tqdm(total=len(videos), desc=f"{set_name}: {method}", unit="video")
        boards[method], seconds = score_generated(
            segmenter, videos, args.clip_frames, lambda done, _, bar=bar: bar.update(1)
        )
        bar.close()
        report[method] = dict(
            boards[method].metrics(),
            interval=bootstrap_interval(boards[method]),
            frames=len(videos) * args.frames,
            seconds=seconds,
            setting=segmenter.acceleration.to_dict(),
        )
    metrics = dict(report[args.method], method=args.method, videos=len(videos))
    if args.against:
        metrics["against"] = dict(
            report[args.against],
            method=args.against,
            difference=paired_difference(boards[args.method], boards[args.against]),
        )
    return metrics


def _draw_sheet(segmenter, set_name: str, args) -> None:
    """SHEETS/<set>.png: 8 frames of the set's first video, ground truth above the instances of
    --method (not of --against's, which ran last)."""
    from tca_core.evaluation import segment_video
    from tca_core.model import tuned_acceleration
    from tca_core.synthetic import CATEGORIES, held_out_videos

    from .render import truth_and_prediction_sheet

    video = held_out_videos(set_name, 1, args.frames)[0]
    frames, objects = video.frames()
    picked = [round(i * (len(frames) - 1) / 7) for i in range(8)]
    segmenter.acceleration = tuned_acceleration(args.model, args.method, args.acceleration)
    results = segment_video(segmenter, "sheet", frames, args.clip_frames)
    truth = [[(o.mask, o.category_id) for o in objects[t]] for t in picked]
    predicted = [[(i.mask, i.category_id) for i in results[t].instances] for t in picked]
    args.sheets.mkdir(parents=True, exist_ok=True)
    path = args.sheets / f"{set_name}.png"
    truth_and_prediction_sheet(frames[picked], truth, predicted, CATEGORIES).save(path)
    print(f"drawn: {path}")


def generate(args) -> int:
    """Write generated videos (MP4) and their YouTube-VIS ground truth."""
    from .generate import write_generated

    seeds = [args.seed + i for i in range(args.videos)]
    path = write_generated(args.out, seeds, args.frames, args.fps)
    print(f"{len(seeds)} videos and {path}")
    return 0


def render_command(args) -> int:
    """Draw a run's masks (a masks Parquet file, read by record batches) over its video."""
    from .render import render

    overlay_path, sheet_path = render(args.video, args.masks, args.out, args.name)
    print(f"rendered: {overlay_path}, {sheet_path}")
    return 0


def export_command(args) -> int:
    """Write a run's committed videos as YouTube-VIS results JSON, video after video (one video's tracks
    in memory at a time); the file appears once complete."""
    from .export import write_youtube_vis_results

    partial = args.out.with_name(args.out.name + ".partial")
    try:
        with partial.open("w") as out:
            videos, tracks = write_youtube_vis_results(args.output, out, args.endpoint_url)
        partial.replace(args.out)
    finally:
        partial.unlink(missing_ok=True)
    print(f"{tracks} tracks of {videos} videos -> {args.out}")
    return 0


def validate_command(args) -> int:
    """Check a run's output; exit status 1 when anything is wrong."""
    from .validate import validate

    report = validate(args.output, args.endpoint_url)
    print(report.text())
    return 0 if report.ok else 1


def bench(args) -> int:
    """The trade-off sweep; prints the table, the chosen default and the TCA-vs-clustering check."""
    from .sweep import FIDELITY_FOR_DEFAULT, markdown_table, run

    report = run(args.quick, args.out, args.model)
    print(markdown_table(report["rows"]))
    default = report["default"]
    chosen = default["setting"] if default else "none qualifies"
    print(
        f"fastest TCA setting (backbone GFLOPs) with fidelity mIoU >= {FIDELITY_FOR_DEFAULT} on each held-out set: {chosen}"
    )
    for against, counts in report["claim_summary"].items():
        print(
            f"TCA vs {against} at {counts['settings']} equal settings, on both held-out sets: fidelity (mIoU and feature cosine) at least "
            f"as high at {counts['fidelity_at_least']}, accuracy (mIoU, AP vs ground truth) not significantly "
            f"lower at {counts['accuracy_not_lower']}, significantly higher at {counts['accuracy_higher']}; "
            f"curves: a TCA point as cheap (+1%) with at least the fidelity mIoU at {counts['curve_at_least']} of "
            f"{counts['curve_points']} {against} points"
        )
    written = ", ".join(str(args.out / name) for name in ("results.json", "report.json", "tradeoff.png", "claim.png"))
    print(f"written: {written}")
    return 0


def tune_command(args) -> int:
    """Label-free calibration on the user's videos; prints the chosen point and where it was written."""
    from .tune import TuneRequest, TuneSample, tune

    given = dict(segments=args.segments, segment_frames=args.segment_frames, clip_frames=args.clip_frames)
    sample = TuneSample(**{name: value for name, value in given.items() if value is not None})
    target = {} if args.target is None else {"target": args.target}
    request = TuneRequest(
        args.model,
        args.input,
        args.out,
        short_side=args.short_side,
        budget_minutes=args.budget,
        quick=args.quick,
        sample=sample,
        endpoint_url=args.endpoint_url,
        **target,
    )
    report = tune(request)
    chosen = report["chosen"]
    print(f"swept {len(report['rows']) - 1} points on {report['frames']} frames of {report['segments']} segments")
    if not chosen:
        best = max((r for r in report["rows"] if r["method"] == "tca"), key=lambda r: r["fidelity_miou"])
        print(
            f"no TCA point reaches fidelity mIoU {request.target}; the best: {best['setting']} ({best['fidelity_miou']:.3f})"
        )
        return 1
    print(
        f"chosen: {chosen['setting']}: fidelity mIoU {chosen['fidelity_miou']:.3f}, instance IoU "
        f"{chosen['fidelity_instance_iou']:.3f}, feature cosine {chosen['feature_cosine']:.3f}, backbone "
        f"{chosen['speedup_backbone']:.2f}x, whole model {chosen['speedup_model']:.2f}x"
    )
    print(f"written: {args.out} (use it with --acceleration {args.out})")
    return 0


def main(argv=None) -> int:
    """Run `tca-segment` on `argv` (default: the command line's arguments); the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # the nightly job, with its own options (python -m pipelines.nightly --help)
        from . import nightly

        return nightly.main(argv[1:])
    args = parser().parse_args(argv)
    return args.handler(args)


def parser() -> argparse.ArgumentParser:
    """The subcommands and their options; each parsed namespace carries its subcommand's `handler`."""
    top = argparse.ArgumentParser(prog="tca-segment", description="Video segmentation with Temporal Cluster Assignment")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="the nightly batch job (options: python -m pipelines.nightly --help)")
    _add_model_commands(commands)
    _add_data_commands(commands)
    sub = commands.add_parser("bench", help="accuracy-speed trade-off of clustering and TCA (docs/benchmarks.md)")
    sub.add_argument("--quick", action="store_true", help="a few operating points on little data (minutes)")
    sub.add_argument("--out", type=Path, default=Path("out/bench"))
    MODEL_KNOBS["model"].add_to(sub)
    sub.set_defaults(handler=bench)
    _add_tune_command(commands)
    return top


def _add_tune_command(commands):
    sub = commands.add_parser(
        "tune", help="choose acceleration settings for a checkpoint on your own videos, label-free"
    )
    sub.add_argument("--input", required=True, help="a video file, or a directory or prefix (s3:// too) of videos")
    sub.add_argument("--out", type=Path, default=Path("out/tune/acceleration.json"), help="the acceleration file")
    sub.add_argument(
        "--target",
        type=float,
        help="label-map fidelity mIoU to none to reach (default: the bench's, FIDELITY_FOR_DEFAULT)",
    )
    sub.add_argument("--budget", type=float, help="minutes: stop sweeping after the clip that passes them")
    sub.add_argument("--quick", action="store_true", help="bench --quick's few operating points")
    sub.add_argument("--segments", type=int, help="segments per video, spread through it (default 3)")
    sub.add_argument("--segment-frames", type=int, help="frames per segment (default 16)")
    sub.add_argument("--endpoint-url", help="an S3-compatible store's endpoint")
    for name in ("model", "short_side", "clip_frames"):  # tune at the size the job will run at
        MODEL_KNOBS[name].add_to(sub)
    sub.set_defaults(handler=tune_command)


def _model_options(sub):
    for name in ("model", "method", "clip_frames", "acceleration"):
        MODEL_KNOBS[name].add_to(sub)


def _add_model_commands(commands):
    """demo and evaluate: the model on generated (or given) videos."""
    sub = commands.add_parser("demo", help="segment a generated (or given) video end to end")
    sub.add_argument("--out", type=Path, default=Path("out/demo"))
    sub.add_argument("--input", type=Path, help="a video file instead of a generated one")
    sub.add_argument("--frames", type=int, default=48, help="frames of the generated video")
    sub.add_argument("--seed", type=int, default=0, help="which held-out generated video")
    _model_options(sub)
    sub.set_defaults(handler=demo)

    sub = commands.add_parser("evaluate", help="mIoU and video AP on held-out generated videos")
    sub.add_argument("--videos", type=int, default=16, help="videos per held-out set")
    sub.add_argument("--frames", type=int, default=48)
    sub.add_argument("--json", type=Path, help="also write the metrics here")
    sub.add_argument("--against", choices=METHODS, help="also run this method; report paired differences")
    sub.add_argument("--set", choices=list(HELD_OUT_SETS), help="only this held-out set (default: each)")
    sub.add_argument("--sheets", type=Path, help="draw each set's first video, truth beside the model, here")
    _model_options(sub)
    sub.set_defaults(handler=evaluate)


def _add_data_commands(commands):
    """generate, and the readers of a run's output: render, export-ytvis, validate."""
    sub = commands.add_parser("generate", help="write generated videos with YouTube-VIS ground truth")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--videos", type=int, default=4)
    sub.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    sub.add_argument("--frames", type=int, default=48)
    sub.add_argument("--fps", type=float, default=12.0)
    sub.set_defaults(handler=generate)

    sub = commands.add_parser("render", help="draw a run's masks over its video (MP4 and PNG)")
    sub.add_argument("--video", type=Path, required=True)
    sub.add_argument("--masks", type=Path, required=True, help="the video's masks Parquet file")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--name", default="overlay")
    sub.set_defaults(handler=render_command)

    sub = commands.add_parser("export-ytvis", help="a run's output as YouTube-VIS results JSON")
    sub.add_argument("output", help="the run's output prefix")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--endpoint-url")
    sub.set_defaults(handler=export_command)

    sub = commands.add_parser("validate", help="check a run's output: complete videos, RLEs, ids, manifests")
    sub.add_argument("output", help="the run's output prefix (a directory or s3://bucket/prefix/)")
    sub.add_argument("--endpoint-url", help="S3-compatible endpoint")
    sub.set_defaults(handler=validate_command)


if __name__ == "__main__":
    raise SystemExit(main())
