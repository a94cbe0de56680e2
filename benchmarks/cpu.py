"""CPU seconds of a process tree, sampled from /proc (Linux): a figure that the other users of a
shared CPU inflate far less than they do wall time, and that says which process the time went to."""

from __future__ import annotations

import os
import threading

# The roles of a local Ray job's processes, told by the titles each took: Ray's workers retitle
# themselves "ray::<task or actor>", and "ray::IDLE" between tasks.
ROOT_ROLE = "driver"
ACTOR_ROLE, ACTOR_MARK = "inference actor", "SegmentActor"
TASK_ROLE, TASK_MARKS = "task workers (probe, decode, write)", ("probe_video", "decode_segment", "write_chunk")
IDLE_TITLE = "ray::IDLE"
OTHER_ROLE = "Ray's daemons and Ray Data's own actors"


class TreeCPU:
    """CPU seconds (user + system) of a process and its descendants, sampled every `interval`
    seconds. With `from_now`, the seconds of processes that already ran when sampling began count
    from that moment. What a process spends after the last sample that saw it is missed."""

    def __init__(self, root_pid: int, interval: float = 0.5, from_now: bool = False):
        self.root, self.interval, self.from_now = root_pid, interval, from_now
        self._latest: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds
        self._before: dict[tuple[int, int], float] = {}
        self._titles: dict[tuple[int, int], set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    @property
    def seconds(self) -> float:
        return sum(self._spent().values())

    def by_role(self) -> dict[str, float]:
        """CPU seconds per role: the root's, the inference actor's, the task workers' (a worker that
        never left IDLE counts as one), and the rest's."""
        roles: dict[str, float] = {}
        for key, seconds in self._spent().items():
            role = ROOT_ROLE if key[0] == self.root else _role(self._titles.get(key, set()))
            roles[role] = roles.get(role, 0.0) + seconds
        return roles

    def __enter__(self):
        if self.from_now:
            self._before = {key: cpu for key, cpu in self._tree_sample()}
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _spent(self) -> dict[tuple[int, int], float]:
        return {key: cpu - self._before.get(key, 0.0) for key, cpu in self._latest.items()}

    def _sample_until_stopped(self):
        while not self._stop.is_set():
            for key, cpu in self._tree_sample():
                self._latest[key] = cpu
                self._titles.setdefault(key, set()).add(_title(key[0]))
            self._stop.wait(self.interval)

    def _tree_sample(self) -> list[tuple[tuple[int, int], float]]:
        stats = _proc_stats()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                _, started, cpu = stats[pid]
                found.append(((pid, started), cpu))
            todo += children.get(pid, [])
        return found


def _role(titles: set[str]) -> str:
    if any(ACTOR_MARK in title for title in titles):
        return ACTOR_ROLE
    if any(mark in title for title in titles for mark in TASK_MARKS) or titles == {IDLE_TITLE}:
        return TASK_ROLE
    return OTHER_ROLE


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:  # the process has gone
        return ""


def _proc_stats() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, start time in ticks, CPU seconds) of every process, from /proc/PID/stat."""
    tick, stats = os.sysconf("SC_CLK_TCK"), {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:  # the process has gone
            continue
        ppid, utime, stime, started = int(fields[1]), int(fields[11]), int(fields[12]), int(fields[19])
        stats[int(entry.name)] = (ppid, started, (utime + stime) / tick)
    return stats
