"""Archive scale: how the nightly job's reads, time per frame and driver memory grow with a video's
length and an archive's size, on local Ray and a local S3 (moto's server) behind a counting proxy.

Runs, each one `run_job` in a fresh subprocess (its own local Ray), so that the driver's peak memory
(ru_maxrss of that process; Ray's workers are other processes) is that run's alone:

- long recordings: each of --videos stream-copied --factors times end to end, video stream only
  (benchmarks/recordings.py; car-detection.mp4 is 377 frames, 2.3 MB of video: 40x is 15080
  frames, 93 MB), one recording per run under its own input prefix; and a reference run on the
  video's first group of pictures (60 frames of car-detection.mp4), to take the job's fixed cost
  (Ray, probing, the model load, the pipeline filling) out of the time per frame;
- with --repeat N, each reference and each recording but a video's longest runs N times and the
  run of median job time is kept (the job column shows the range): runs of seconds vary by 10-20%
  between runs here, more than the goal's margin, while the longest runs for minutes;
- archives: --archive-files small generated clips (8 frames of 64x96 each) and a baseline of
  --baseline-files, for the time to first output and the driver's memory against the archive's size.

Measured per run:
- bytes of the video objects read (successful GET bodies seen by the proxy under the run's input
  prefix) per byte of video, and the GETs;
- wall seconds per frame, end to end (the summary's `seconds` / frames) and marginal: the seconds
  the run took beyond the reference run per frame beyond it, (T - T_ref) / (F - F_ref); the
  summary's `first_output_seconds` cannot stand for the start-up, as it can come near the end;
- CPU seconds per frame, end to end and marginal, of the subprocess and its descendants (Ray's
  daemons and workers; /proc sampled every 0.5 s), which other users of a shared CPU inflate far
  less than wall time; the store's own CPU (moto and the proxy, in this process) is not in it;
- time to first output: the summary's `first_output_seconds` (from inside `run_job`) and, seen
  from outside, the first object written under the output prefix, from the subprocess's start;
- the subprocess's wall time and the driver's peak RSS.

Goals, printed as pass/fail: bytes read <= 1.2x the video's bytes at every length; marginal wall
time per frame at the longest length at most 1.1x that at 1x; driver peak memory at the longest
length at most 1.3x that at 1x; first output of the large archive (seen from outside) within 60 s.
Figures without a limit are printed beside them as "info". The exit status is 1 when a goal fails.

Model (inference cost per frame does not depend on the length, so it only has to be cheap and
real): by default the shipped model (tca_core/weights/swin-shapes of --code, TCA at its tuned
settings) with --short-side 64, about 16-18 ms a frame end to end in the job on 2 CPU cores; `--model tiny` is a
random-weight Swin Mask2Former of tests/conftest.py's small proportions, saved to the cache; or any
checkpoint path.

    python -m benchmarks.archive_scale --quick --out out/archive-scale-quick   # 1x and 4x, 100 files
    python -m benchmarks.archive_scale --out out/archive-scale                 # 1x, 10x, 40x, 500 files
    # the last commit while the working tree is being edited:
    git archive HEAD | tar -x -C /tmp/head && python -m benchmarks.archive_scale --quick --code /tmp/head

On this project's 2 CPU cores a full run of car-detection.mp4 with --repeat 3 takes about 25
minutes, one of bottle-detection.mp4 (--skip-archives) about 25 more, a --quick run a few
(docs/benchmarks.md has the figures). The code of commit 7b500bc reads the whole file once per
chunk: about 22 GB for the 40x recording (not run).

Writes archive_scale.json, archive_scale.md and archive_scale.png to --out (and each run's log, spec
and result under --out/logs); recordings and archives are cached in --cache (outside the
repository by default) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tca_core.config import METHODS

if TYPE_CHECKING:
    from benchmarks.s3proxy import CountingProxy

# The runs import pipelines/ from --code, which may be another tree with another benchmarks/ package:
# this file imports its siblings (cpu, recordings, s3proxy) inside the functions only the parent runs.
REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "videos"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tca-video" / "archive-scale"
BUCKET = "archive-scale"
ARCHIVE_CLIP_FRAMES = 8
GOALS = dict(bytes_ratio=1.2, time_per_frame_ratio=1.10, driver_memory_ratio=1.3, first_output_seconds=60.0)


@dataclass
class Case:
    """One run: the files under one input prefix and the frames they hold."""

    name: str
    kind: str  # "recording", "reference" (a recording's first group of pictures) or "archive"
    files: list[Path]
    frames: int
    video: str = ""  # recordings: the source's name
    factor: int = 0  # recordings: copies end to end
    measured: dict = field(default_factory=dict)

    @property
    def video_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/archive-scale"), help="results directory")
    parser.add_argument("--quick", action="store_true", help="factors 1 and 4, archives of 100 and 20 files")
    parser.add_argument("--videos", nargs="+", default=["car-detection.mp4"], help="sample videos to lengthen")
    parser.add_argument("--video-dir", type=Path, default=SHARED_VIDEOS)
    parser.add_argument("--factors", type=int, nargs="+", help="copies end to end (default 1 10 40; quick: 1 4)")
    parser.add_argument("--archive-files", type=int, help="files in the large archive (default 500; quick: 100)")
    parser.add_argument("--baseline-files", type=int, default=20, help="files in the small archive")
    parser.add_argument("--model", default="shipped", help="'shipped', 'tiny' (random weights) or a checkpoint path")
    parser.add_argument("--short-side", type=int, default=64, help="frames resized to this short side for the model")
    parser.add_argument("--method", default="tca", choices=METHODS)
    parser.add_argument("--chunk-frames", type=int, help="the job's --chunk-frames (default: the job's)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="inference threads per actor (default: the job's, the CPUs less one without GPUs)",
    )
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count(), help="CPUs of each run's local Ray")
    parser.add_argument("--run-timeout", type=float, default=3 * 3600, help="seconds before a run is killed")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="recordings, archives, tiny model")
    parser.add_argument(
        "--code",
        type=Path,
        default=REPO,
        help="project tree whose pipelines/ and tca_core/ the runs import (default: this one); e.g. the last "
        "commit, exported with `git archive HEAD | tar -x -C DIR`, while the working tree is being edited",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each reference and each recording but the longest this many times and keep the run of "
        "median job time (runs of seconds vary by 10-20%% between runs on a shared machine)",
    )
    parser.add_argument("--skip-archives", action="store_true", help="recordings only")
    parser.add_argument("--skip-recordings", action="store_true", help="archives only")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        help="run nothing: write one report and plot to --out from the archive_scale.json of these directories",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: run one job from a spec file
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the runs start in --code
    args.factors = args.factors or ([1, 4] if args.quick else [1, 10, 40])
    args.archive_files = args.archive_files or (100 if args.quick else 500)
    if 1 not in args.factors:
        parser.error("--factors must include 1 (the goals compare against it)")
    return args


def make_cases(args) -> list[Case]:
    """Build (or reuse from the cache) every run's files."""
    from benchmarks.recordings import count_frames, head_recording, long_recording, small_archive

    cases = []
    for video in [] if args.skip_recordings else args.videos:
        source = args.video_dir / video
        frames = count_frames(source)
        head = head_recording(source, args.cache / "recordings" / f"{source.stem}-head{source.suffix}")
        if count_frames(head) < frames:  # else the video is one group of pictures: no reference
            cases.append(Case(f"{source.stem}-head", "reference", [head], count_frames(head), video=video))
        for factor in sorted(set(args.factors)):
            name = f"{source.stem}-x{factor}"
            path = long_recording(source, args.cache / "recordings" / f"{name}{source.suffix}", factor)
            cases.append(Case(name, "recording", [path], factor * frames, video=video, factor=factor))
    for count in [] if args.skip_archives else sorted({args.baseline_files, args.archive_files}):
        files = small_archive(args.cache / "archives" / f"clips-{count}", count, frames=ARCHIVE_CLIP_FRAMES)
        cases.append(Case(f"archive-{count}", "archive", files, count * ARCHIVE_CLIP_FRAMES))
    return cases


def model_path(args) -> str:
    """The checkpoint the runs load: the shipped one, a saved random-weight tiny one, or the given path."""
    if args.model == "shipped":
        return str(args.code.resolve() / "tca_core" / "weights" / "swin-shapes")
    if args.model != "tiny":
        return args.model
    from tca_core.model import build_model, swin_mask2former_config

    path = args.cache / "tiny-model"
    if not (path / "config.json").exists():
        swin = dict(embed_dim=32, depths=[1, 1, 4, 1], num_heads=[1, 2, 4, 8], window_size=7)
        head = dict(num_queries=12, decoder_layers=3, encoder_layers=1, hidden_dim=64, feature_size=64)
        head.update(mask_feature_size=64, dim_feedforward=128, encoder_feedforward_dim=128)
        config = swin_mask2former_config(swin, id2label={0: "disc", 1: "square"}, **head)
        build_model(config, seed=0).save_pretrained(path)
    return str(path)


def upload(endpoint: str, cases: list[Case]):
    """Put every case's files under in/<case>/ in the bucket, straight to the store (not counted)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    for case in cases:
        for path in case.files:
            client.upload_file(str(path), BUCKET, f"in/{case.name}/{path.name}")


def run_repeated(case: Case, args, proxy: CountingProxy, model: str, times: int) -> dict:
    """Run a case `times` times; keeps (in `case.measured`) the run of median job time, with every
    run's job time beside it."""
    runs = sorted((run_case(case, args, proxy, model, n) for n in range(times)), key=lambda m: m["job_seconds"])
    case.measured = dict(runs[len(runs) // 2], job_seconds_of_runs=[m["job_seconds"] for m in runs])
    return case.measured


def repeats(case: Case, cases: list[Case], args) -> int:
    """How often a case runs: --repeat times, except archives and each video's longest recording."""
    longest = max((c.factor for c in cases if c.video == case.video and c.kind == "recording"), default=0)
    return 1 if case.kind == "archive" or (case.kind == "recording" and case.factor == longest) else args.repeat


def run_case(case: Case, args, proxy: CountingProxy, model: str, attempt: int = 0) -> dict:
    """Run the job on one case in a subprocess, writing to an output prefix of the attempt's own;
    its measurements (also kept in `case.measured`)."""
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    job = dict(
        input=f"s3://{BUCKET}/in/{case.name}/",
        output=f"s3://{BUCKET}/out/{case.name}/{attempt}/",
        endpoint_url=proxy.url,
        model=model,
        method=args.method,
        short_side=args.short_side,
        **({"torch_threads": args.torch_threads} if args.torch_threads else {}),
        **({"chunk_frames": args.chunk_frames} if args.chunk_frames else {}),
    )
    run = f"{case.name}.{attempt}"
    spec, result = logs / f"{run}.spec.json", logs / f"{run}.result.json"
    spec.write_text(json.dumps(dict(job=job, ray_cpus=args.ray_cpus, result=str(result))))
    result.unlink(missing_ok=True)
    proxy.reset()
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec.resolve())]
    start = time.monotonic()
    with open(logs / f"{run}.log", "w") as log:
        returncode, cpu = _run_child(command, args.code.resolve(), log, args.run_timeout)
    wall = time.monotonic() - start
    if returncode != 0 or not result.exists():
        raise RuntimeError(f"{run}: the run exited with {returncode}; see {logs / run}.log")
    case.measured = measure(case, json.loads(result.read_text()), proxy, start, wall, job["output"])
    case.measured.update(cpu_seconds=cpu, cpu_seconds_per_frame=_ratio(cpu, case.measured["frames"]))
    return case.measured


def _run_child(command: list[str], code: Path, log, timeout: float) -> tuple[int, float]:
    """Run `command` in `code` with `code` first on the import path (Ray's workers inherit both), in its
    own session; its process group is killed past `timeout` seconds. (exit status, CPU seconds of it
    and its descendants: Ray's workers and daemons)."""
    from benchmarks.cpu import TreeCPU

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])]))
    process = subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with TreeCPU(process.pid) as cpu:
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            returncode = process.wait()
    return returncode, cpu.seconds


def measure(case: Case, child: dict, proxy: CountingProxy, start: float, wall: float, output: str) -> dict:
    """The figures of one run, from its summary, the proxy's records and the subprocess's times."""
    summary = child["summary"]
    inputs, written = proxy.requests(f"{BUCKET}/in/{case.name}/"), proxy.requests(output.removeprefix("s3://"))
    writes = [r for r in written if r.method in ("PUT", "POST") and 200 <= r.status < 300]
    first_write = min(writes, key=lambda r: r.finished, default=None)
    frames, seconds = summary["frames"], summary["seconds"]
    bytes_read = proxy.bytes_read(f"{BUCKET}/in/{case.name}/")
    return dict(
        videos_ok=summary["videos_ok"],
        videos_failed=summary["videos_failed"],
        frames=frames,
        complete=summary["videos_failed"] == 0 and frames == case.frames,
        video_bytes=case.video_bytes,
        bytes_read=bytes_read,
        bytes_ratio=bytes_read / case.video_bytes,
        input_requests=len(inputs),
        input_gets=sum(r.method == "GET" and bool(r.key) for r in inputs),
        job_seconds=seconds,
        wall_seconds=wall,
        seconds_per_frame=seconds / frames if frames else None,
        first_output_summary=summary["first_output_seconds"],
        first_output_from_start=first_write.finished - start if first_write else None,
        first_output_key=first_write.key if first_write else None,
        driver_peak_rss_bytes=child["driver_peak_rss_bytes"],
    )


def child_main(spec_path: Path) -> int:
    """In the subprocess: one `run_job` on a fresh local Ray; writes its summary and the peak RSS."""
    import ray

    from pipelines.nightly import JobConfig, run_job

    spec = json.loads(spec_path.read_text())
    config = JobConfig(**spec["job"])
    ray.init(address="local", num_cpus=spec["ray_cpus"], include_dashboard=False, log_to_driver=False)
    try:
        summary = run_job(config, progress=False)
    finally:
        ray.shutdown()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    result = dict(summary=summary, driver_peak_rss_bytes=peak)
    Path(spec["result"]).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def add_marginal(cases: list[Case]):
    """Each recording's marginal wall and CPU seconds per frame: beyond its video's reference run."""
    references = {c.video: c for c in cases if c.kind == "reference"}
    for case in cases:
        reference = references.get(case.video)
        if case.kind != "recording" or reference is None:
            continue
        extra = case.measured["frames"] - reference.measured["frames"]
        for key, per_frame in (
            ("job_seconds", "seconds_per_frame_marginal"),
            ("cpu_seconds", "cpu_seconds_per_frame_marginal"),
        ):
            case.measured[per_frame] = _ratio(case.measured[key] - reference.measured[key], extra)


def _ratio(numerator, denominator):
    return None if numerator is None or not denominator else numerator / denominator


def goals(cases: list[Case]) -> list[dict]:
    """The goals (what, value, limit, passed; passed None: not measured) and, without a limit, figures
    worth reading beside them."""
    found = []
    recordings = [c for c in cases if c.kind == "recording"]
    for video in sorted({c.video for c in recordings}):
        runs = sorted((c for c in recordings if c.video == video), key=lambda c: c.factor)
        base, longest = runs[0].measured, runs[-1].measured
        at = f"{video} x{runs[-1].factor} vs x{runs[0].factor}"
        worst = max(runs, key=lambda c: c.measured["bytes_ratio"])
        found.append(
            _goal(f"bytes read / video bytes, worst ({worst.name})", worst.measured["bytes_ratio"], "bytes_ratio")
        )
        spf = _ratio(longest["seconds_per_frame_marginal"], base["seconds_per_frame_marginal"])
        found.append(_goal(f"marginal time per frame, {at}", spf, "time_per_frame_ratio"))
        cpu = _ratio(longest["cpu_seconds_per_frame_marginal"], base["cpu_seconds_per_frame_marginal"])
        found.append(_goal(f"marginal CPU time per frame, {at}", cpu))
        found.append(
            _goal(f"time per frame end to end, {at}", _ratio(longest["seconds_per_frame"], base["seconds_per_frame"]))
        )
        rss = _ratio(longest["driver_peak_rss_bytes"], base["driver_peak_rss_bytes"])
        found.append(_goal(f"driver peak RSS, {at}", rss, "driver_memory_ratio"))
        found.append(
            _goal(f"first output of {runs[-1].name}, from the subprocess's start", longest["first_output_from_start"])
        )
    archives = sorted((c for c in cases if c.kind == "archive"), key=lambda c: len(c.files))
    if archives:
        small, large = archives[0], archives[-1]
        value = large.measured["first_output_from_start"]
        found.append(_goal(f"first output of {large.name}, from the subprocess's start", value, "first_output_seconds"))
        rss = _ratio(large.measured["driver_peak_rss_bytes"], small.measured["driver_peak_rss_bytes"])
        found.append(_goal(f"driver peak RSS, {large.name} vs {small.name}", rss))
    return found


def _goal(what: str, value, key: str | None = None) -> dict:
    """A goal against GOALS[key], or a figure without a limit when `key` is None."""
    limit = GOALS.get(key)
    passed = None if value is None or limit is None else value <= limit
    return dict(goal=what, value=value, limit=limit, passed=passed)


def markdown(cases: list[Case], found: list[dict], settings: dict) -> str:
    """The results as a markdown table, the goals and the settings."""
    head = (
        "| run | files | frames | MB | bytes read / video | GETs | s/frame | marginal s/frame | CPU s/frame | "
        "marginal CPU s/frame | "
        "first output (summary) s | first output (outside) s | job s | subprocess s | driver peak RSS MB | complete |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for case in cases:
        m = case.measured
        cells = [case.name, len(case.files), m["frames"], f"{m['video_bytes'] / 1e6:.1f}", f"{m['bytes_ratio']:.2f}"]
        cells += [m["input_gets"], _fmt(m["seconds_per_frame"], 4), _fmt(m.get("seconds_per_frame_marginal"), 4)]
        cells += [_fmt(m["cpu_seconds_per_frame"], 4), _fmt(m.get("cpu_seconds_per_frame_marginal"), 4)]
        cells += [_fmt(m["first_output_summary"], 1), _fmt(m["first_output_from_start"], 1)]
        runs = m.get("job_seconds_of_runs", [])
        job = f"{m['job_seconds']:.1f}" + (f" ({min(runs):.1f}-{max(runs):.1f})" if len(runs) > 1 else "")
        cells += [job, f"{m['wall_seconds']:.1f}", f"{m['driver_peak_rss_bytes'] / 2**20:.0f}"]
        cells.append("yes" if m["complete"] else "NO")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Goals:", ""]
    lines += [f"- {_verdict(g)} {g['goal']}: {_fmt(g['value'], 3)}" + _limit(g) for g in found]
    lines += ["", "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items())]
    return "\n".join(lines) + "\n"


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(goal: dict) -> str:
    if goal["limit"] is None:
        return "info"
    return {True: "PASS", False: "FAIL", None: "n/a "}[goal["passed"]]


def _limit(goal: dict) -> str:
    return "" if goal["limit"] is None else f" (limit {goal['limit']})"


def plot(cases: list[Case], path: Path):
    """Time per frame and bytes read per video byte against the recording's length (frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for video in sorted({c.video for c in cases if c.kind == "recording"}):
        runs = sorted((c for c in cases if c.kind == "recording" and c.video == video), key=lambda c: c.frames)
        frames = [c.frames for c in runs]
        left.plot(frames, _series(runs, "seconds_per_frame"), "o-", label=f"{video}, end to end")
        left.plot(
            frames,
            _series(runs, "seconds_per_frame_marginal"),
            "s--",
            label=f"{video}, marginal (beyond the reference)",
        )
        left.plot(
            frames,
            _series(runs, "cpu_seconds_per_frame_marginal"),
            "^:",
            label=f"{video}, marginal CPU (all processes)",
        )
        right.plot(frames, _series(runs, "bytes_ratio"), "o-", label=video)
    right.axhline(GOALS["bytes_ratio"], color="grey", linestyle=":", label=f"goal {GOALS['bytes_ratio']}x")
    left.set(xscale="log", xlabel="recording length (frames)", ylabel="seconds per frame", ylim=(0, None))
    right.set(xscale="log", yscale="log", xlabel="recording length (frames)", ylabel="bytes read / video bytes")
    for axis in (left.xaxis, right.xaxis, right.yaxis):
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.suptitle("nightly job on local Ray + S3 (moto): cost against a video's length")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _series(runs: list[Case], key: str) -> list[float]:
    return [float("nan") if c.measured.get(key) is None else c.measured[key] for c in runs]


def main(argv=None) -> int:
    """Build the inputs, run every case, write the results; exit status 1 when a goal fails."""
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.combine:
        return combine(args.combine, args.out)
    cases, model = make_cases(args), model_path(args)
    settings = dict(code=str(args.code), model=model, short_side=args.short_side, method=args.method)
    settings.update(ray_cpus=args.ray_cpus, repeat=args.repeat)
    settings.update(torch_threads=args.torch_threads or "job default", chunk_frames=args.chunk_frames or "job default")
    from benchmarks.s3proxy import CountingProxy, moto_s3

    with moto_s3() as endpoint, CountingProxy(endpoint) as proxy:
        upload(endpoint, cases)
        for case in cases:
            print(f"{case.name}: {len(case.files)} files, {case.frames} frames ...", flush=True)
            measured = run_repeated(case, args, proxy, model, repeats(case, cases, args))
            print("  " + ", ".join(f"{k} {_fmt(v, 3) if isinstance(v, float) else v}" for k, v in measured.items()))
    add_marginal(cases)
    found = goals(cases)
    report = dict(settings=settings, goals=GOALS, runs=[_case_json(c) for c in cases], verdicts=found)
    (args.out / "archive_scale.json").write_text(json.dumps(report, indent=2))
    (args.out / "archive_scale.md").write_text(markdown(cases, found, settings))
    if any(c.kind == "recording" for c in cases):
        plot(cases, args.out / "archive_scale.png")
    print()
    print(markdown(cases, found, settings))
    return 1 if any(g["passed"] is False for g in found) else 0


def combine(directories: list[Path], out: Path) -> int:
    """One report and plot from earlier runs' archive_scale.json (e.g. one video per run)."""
    cases, found, settings = [], [], {}
    for directory in directories:
        report = json.loads((directory / "archive_scale.json").read_text())
        for run in report["runs"]:
            cases.append(Case(**dict(run, files=[Path()] * run["files"])))  # the report needs the count only
        found += report["verdicts"]
        settings[f"{directory.name}: code"] = report["settings"]["code"]
    (out / "archive_scale.md").write_text(markdown(cases, found, settings))
    plot(cases, out / "archive_scale.png")
    print(markdown(cases, found, settings))
    return 1 if any(g["passed"] is False for g in found) else 0


def _case_json(case: Case) -> dict:
    data = asdict(case)
    data["files"] = len(case.files)
    return data


if __name__ == "__main__":
    raise SystemExit(main())
