"""Accuracy-speed trade-off of per-frame `clustering` and `tca` against the full model (`none`), from
the repository: `tca-segment bench` with the same options and output (docs/benchmarks.md). The
sweep, the choice of the default and the files it writes are `pipelines.sweep`'s.

    python -m benchmarks.tradeoff --quick --out out/bench-quick     # a few minutes
    python -m benchmarks.tradeoff --out out/bench                   # the full sweep
"""

from __future__ import annotations

import sys

from pipelines.cli import main as tca_segment


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; `argv` (default: the command line's arguments) as `tca-segment bench` takes them:
    --quick (a few operating points on little data), --out DIR (default out/bench), --model (a
    checkpoint directory or hub id; default: the embedded model)."""
    return tca_segment(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
