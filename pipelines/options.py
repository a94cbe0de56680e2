"""The knobs of the job, the command line and the Serve endpoint, each declared once here: its
default, its help, its type and its range or choices. `JobConfig`'s fields, the job's command line
(`python -m pipelines.nightly`, `tca-segment run`), the model options of `tca-segment demo` and
`evaluate`, and the Serve endpoint's model options (deploy/schemas.py) are built from these
declarations.

Light on purpose (no torch, no Ray): the command line builds its parser from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from tca_core.config import EMBEDDED_MODEL, METHODS, TASKS

VIDEO_GLOBS = ["*.mp4", "*.mkv", "*.mov", "*.avi", "*.webm", "*.m4v"]
# Clips per forward pass of an inference actor, by device: a GPU waits on Python between small
# batches, a CPU gains little from larger ones.
CLIPS_PER_PASS = {"cpu": 1, "cuda": 4}


@dataclass(frozen=True)
class Knob:
    """One option. `kind`: its type (str, int, float; bool: a flag that is off by default);
    `many`: a list of values; `minimum` / `maximum`: its range; `choices`: its values."""

    name: str
    default: Any
    help: str
    kind: type = str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    many: bool = False
    metavar: str | None = None
    pattern: str | None = None  # a regular expression the whole value matches

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def field(self):
        """A dataclass field with this default (a fresh list each time for a list)."""
        if isinstance(self.default, list):
            default = list(self.default)
            return dataclasses.field(default_factory=lambda: list(default), metadata={"knob": self})
        return dataclasses.field(default=self.default, metadata={"knob": self})

    def pydantic(self):
        """A pydantic Field with this default, description and range (choices: annotate the field
        `Literal[...]` of the same constant)."""
        from pydantic import Field

        default = list(self.default) if isinstance(self.default, list) else self.default
        return Field(default, description=self.help, ge=self.minimum, le=self.maximum)

    def add_to(self, parser: argparse.ArgumentParser, **overrides):
        """This knob as a command-line option; `overrides` replace add_argument's arguments."""
        if self.kind is bool:
            options = dict(action="store_true", help=self.help)
        else:
            options = dict(type=self.kind, default=self.default, help=self.help, choices=self.choices)
            options.update({"nargs": "+"} if self.many else {}, **({"metavar": self.metavar} if self.metavar else {}))
        parser.add_argument(self.flag, **(options | overrides))

    def problem(self, value) -> str | None:
        """Why `value` is not a valid setting of this knob; None when it is."""
        if value is None:
            return None if self.default is None else "must be set"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum}, got {value}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum}, got {value}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"must match {self.pattern}, got {value!r}"
        return None


def _knobs(*knobs: Knob) -> dict[str, Knob]:
    return {knob.name: knob for knob in knobs}


# What is segmented and how: the resume signature covers these (JobConfig.settings).
MODEL_KNOBS = _knobs(
    Knob("model", str(EMBEDDED_MODEL), "checkpoint directory or hub id (default: the embedded model)"),
    Knob("method", "tca", "acceleration of the Swin backbone", choices=METHODS),
    Knob("task", "instance", "what to segment: tracked instances, a label map per frame, or both", choices=TASKS),
    Knob("score_threshold", 0.5, "the least score of an instance to keep", float, minimum=0.0, maximum=1.0),
    Knob(
        "short_side",
        None,
        "resize frames so that their short side is this many pixels before the model (default: the "
        "checkpoint's preprocessor config); masks stay at the frame's size",
        int,
        minimum=16,
    ),
    Knob("clip_frames", 8, "frames per model call", int, minimum=1),
    Knob(
        "acceleration",
        None,
        "an acceleration settings file (tca-segment tune --out, tca-segment bench) to use instead of the "
        "checkpoint's own acceleration.json",
        metavar="FILE",
    ),
)

# The job's input, output, work units and resources.
JOB_KNOBS = _knobs(
    Knob("input", None, "prefix to list: s3://bucket/prefix/ or a local directory"),
    Knob("output", "out/nightly", "output prefix: s3://bucket/prefix/ or a local directory"),
    Knob("manifest", None, "CSV, JSONL or Parquet file with a 'uri' column, instead of listing"),
    Knob("include", VIDEO_GLOBS, "globs on the path relative to the input that a video must match", many=True),
    Knob("exclude", [], "globs on the relative path that a video must not match", many=True),
    Knob("endpoint_url", None, "S3-compatible endpoint (credentials: the standard AWS chain)"),
    Knob("chunk_frames", 64, "frames per chunk, the inference actors' unit of work", int, minimum=1),
    Knob("overlap", 4, "warm-up frames before a chunk that starts a video's memory afresh", int, minimum=0),
    Knob("actors", 1, "inference actors", int, minimum=1),
    Knob("cpus_per_actor", 1.0, "CPUs Ray reserves per inference actor (fractions allowed)", float, minimum=0.0),
    Knob(
        "torch_threads",
        None,
        "CPU inference threads per actor (default: on a cluster without GPUs, the CPUs the other stages "
        "leave idle, shared among the actors; else the declared CPUs)",
        int,
        minimum=1,
    ),
    Knob("gpus_per_actor", 0.0, "GPUs per inference actor (fractions allowed; 0: CPU inference)", float, minimum=0.0),
    Knob(
        "clips_per_pass",
        None,
        "chunks an inference actor takes per call, of different videos, run as one forward pass per clip "
        f"step (default: {CLIPS_PER_PASS['cpu']} on CPU actors, {CLIPS_PER_PASS['cuda']} on GPU actors)",
        int,
        minimum=1,
    ),
    Knob(
        "max_actor_restarts",
        3,
        "restarts of an inference actor that dies (lost node, out of memory), its batches retried until "
        "it is up again; beyond them the job stops and reports its unfinished videos failed",
        int,
        minimum=0,
    ),
    Knob("max_task_retries", 3, "retries of a commit task", int, minimum=0),
    Knob("force", False, "recompute videos already committed with the same signature", bool),
    Knob(
        "run_id",
        None,
        "the run's id, naming its manifest and summary under <output>/manifests/ (default: a new one, "
        "from the time and a random suffix); give every run its own",
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}",
    ),
    Knob(
        "ray_address",
        None,
        "a cluster to join ('local': start one; default: the submitted job's cluster, one started on this "
        "machine, or a new local one)",
    ),
    Knob(
        "kill_actor_once",
        None,
        "fault injection (tests, drills): an inference actor's process exits after its N-th batch, once: "
        "unless the file MARKER exists, which it creates (docs/reliability.md)",
        metavar="N:MARKER",
    ),
    Knob("verbose", False, "show Ray's own log lines and progress bars", bool),
)


def problems(config) -> list[str]:
    """What is wrong with a dataclass built from knobs (its fields' `knob` metadata), field by field."""
    found = []
    for spec in dataclasses.fields(config):
        knob = spec.metadata.get("knob")
        reason = knob.problem(getattr(config, spec.name)) if knob else None
        if reason:
            found.append(f"{spec.name} {reason}")
    return found
