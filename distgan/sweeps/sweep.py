"""Seeds and grids of ordinary runs: `distgan sweep CONFIG --grid key=v1,v2 ... --seeds K`.

Each point is an ordinary run in runs/NAME/<point>/ (its overrides in its name and config), so it resumes,
requeues and is evaluated exactly as a single run. Points run on Slurm as one job array (one task per point,
through launch/slurm/sweep_task.sbatch and the same requeue-on-preemption as launch/slurm/job.sh) or J at a
time on this machine with the cores divided among them. Re-running the same sweep skips finished points
(status.json says "finished") and resumes the others from their checkpoints.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distgan.config import ConfigError
from distgan.configure import load_config
from distgan.run.rundir import held_by
from distgan.utils.files import write_json

ROOT = Path(__file__).resolve().parents[2]  # the repository: distgan/sweeps/sweep.py


@dataclass(frozen=True)
class Point:
    name: str
    overrides: list[str]
    seed: int


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """`key=v1,v2` -> (key, [v1, v2]); list values keep their brackets: `model.g_hidden=[64],[128,128]`."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid {item!r}: write it as section.key=v1,v2 (e.g. optim.lr_g=1e-4,2e-4)")
        parts, depth, cur = [], 0, ""
        for ch in values:  # split on commas outside brackets
            depth += ch == "["
            depth -= ch == "]"
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        grid.append((key.strip(), [p.strip() for p in parts if p.strip()]))
    return grid


def _short(key: str, value: str) -> str:
    safe = "".join(c if c.isalnum() or c in ".-_" else "-" for c in value).strip("-")
    return f"{key.rsplit('.', 1)[-1]}={safe or 'x'}"


def plan(config: str, grid: list[tuple[str, list[str]]], seeds: int, extra: Sequence[str] = ()) -> list[Point]:
    """Every point of the grid times the seeds, each checked as a full config before anything runs."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be >= 1")
    keys = [k for k, _ in grid]
    if len(set(keys)) != len(keys) or "train.seed" in keys:
        raise ConfigError("--grid: each key once, and not train.seed (use --seeds)")
    points = []
    for values in itertools.product(*(v for _, v in grid)) if grid else [()]:
        for seed in range(seeds):
            overrides = [
                *extra,
                *(f"{k}={v}" for k, v in zip(keys, values, strict=True)),
                f"train.seed={seed}",
            ]
            cfg = load_config(config, overrides)  # an unknown key or bad value fails here, naming it
            cfg.track.require_packages()
            if cfg.ckpt.dir:
                raise ConfigError(
                    f"ckpt.dir={cfg.ckpt.dir!r} would be shared by every point, which would then resume from "
                    "each other's checkpoints; drop it (each point keeps its checkpoints in its run directory)"
                )
            name = ",".join([*(_short(k, v) for k, v in zip(keys, values, strict=True)), f"seed={seed}"])
            points.append(Point(name, overrides, seed))
    if len({p.name for p in points}) != len(points):
        raise ConfigError("--grid: two points got the same directory name; use values that differ in letters")
    return points


def status(run_dir: Path) -> str:
    """finished | running | preempted | failed | pending (never started)."""
    try:
        return str(json.loads((run_dir / "status.json").read_text())["state"])
    except (OSError, ValueError, KeyError):
        return "pending"


@dataclass
class Sweep:
    config: str
    name: str
    out: Path
    points: list[Point]

    @property
    def dir(self) -> Path:
        return self.out / self.name

    def point_overrides(self, p: Point) -> list[str]:
        """What makes the point an ordinary run of this sweep: its directory, and one wandb group."""
        return [
            *p.overrides,
            f"train.out_dir={self.dir}",
            f"train.run_name={p.name}",
            f"track.group={self.name}",
        ]

    def write(self) -> Path:
        """sweep.json (what was asked last, for people) and sweep-HASH.json, the spec a Slurm array reads: named
        by its content, so a later sweep under the same name cannot change what a queued array runs, and a task
        refuses a file whose content no longer matches its name."""
        spec = {
            "config": self.config,
            "name": self.name,
            "points": [{"name": p.name, "seed": p.seed, "overrides": self.point_overrides(p)} for p in self.points],
        }
        text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
        path = self.dir / f"sweep-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        from distgan.utils.files import write_text

        write_text(path, text)
        write_json(self.dir / "sweep.json", spec)
        return path

    def todo(self) -> list[int]:
        return [i for i, p in enumerate(self.points) if status(self.dir / p.name) != "finished"]

    def run_local(self, jobs: int, say: Callable[[str], None]) -> int:
        """J points at a time, each with cores // J threads; returns the number that did not finish.

        INT/TERM/USR1 to the driver reach every running point (each checkpoints and stops); points whose run
        directory another process still writes (an orphan of a killed driver, another sweep) are not started."""
        if jobs < 1:
            raise ConfigError(f"--local {jobs}: give the number of points to run at once, at least 1")
        todo = self.todo()
        say(
            f"{len(self.points) - len(todo)} of {len(self.points)} points finished already; running {len(todo)}, "
            f"{jobs} at a time"
        )
        cores = len(os.sched_getaffinity(0))
        threads = max(1, cores // jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        running: list[tuple[subprocess.Popen, Point, float]] = []
        queue = [self.points[i] for i in todo]
        stopping: list[int] = []

        def forward(signum: int, frame: object) -> None:
            stopping.append(signum)
            for proc, _, _ in running:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
        try:
            return self._loop(queue, running, jobs, threads, env, stopping, say)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(
        self,
        queue: list[Point],
        running: list[tuple[subprocess.Popen, Point, float]],
        jobs: int,
        threads: int,
        env: dict[str, str],
        stopping: list[int],
        say: Callable[[str], None],
    ) -> int:
        failed = 0
        while queue or running:
            while queue and len(running) < jobs and not stopping:
                p = queue.pop(0)
                holder = held_by(self.dir / p.name)
                if holder:
                    say(f"not starting {p.name}: its run directory is being written by {holder}")
                    failed += 1
                    continue
                (self.dir / p.name).mkdir(parents=True, exist_ok=True)
                log = open(self.dir / p.name / "sweep.log", "a")  # noqa: SIM115 (the child owns it)
                cmd = [
                    sys.executable,
                    str(ROOT / "distgan" / "train.py"),
                    self.config,
                    *self.point_overrides(p),
                ]
                # its own session: a terminal's Ctrl-C reaches the point once, through `forward`
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
                running.append((proc, p, time.time()))
                say(f"started {p.name} ({threads} threads)")
            time.sleep(0.5)
            for proc, p, t0 in list(running):
                if proc.poll() is not None:
                    running.remove((proc, p, t0))
                    ok = proc.returncode == 0
                    failed += not ok
                    state = "finished" if ok else f"FAILED (exit {proc.returncode})"
                    say(f"{state} {p.name} in {time.time() - t0:.0f} s")
        if stopping and queue:
            say(f"stopped by a signal: {len(queue)} point(s) not started; the same command resumes the sweep")
        return failed + (len(queue) if stopping else 0)

    def submit_slurm(self, limit: int, sbatch_args: list[str], say: Callable[[str], None]) -> str:
        """One job array over the unfinished points; returns the job id ('' when nothing is left to do)."""
        todo = self.todo()
        if not todo:
            say(f"all {len(self.points)} points finished; nothing submitted")
            return ""
        spec = self.write()
        array = ",".join(str(i) for i in todo) + (f"%{limit}" if limit else "")
        cmd = [
            "sbatch",
            "--parsable",
            f"--array={array}",
            f"--job-name=sweep-{self.name}",
            f"--output={self.dir}/slurm-%A_%a.out",
            *sbatch_args,
            str(ROOT / "launch/slurm/sweep_task.sbatch"),
            str(spec),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            raise ConfigError(f"sbatch refused the array: {res.stderr.strip()}")
        job = res.stdout.strip().split(";")[0]
        say(f"submitted job array {job} with {len(todo)} of {len(self.points)} points ({array})")
        return job


def task_overrides(spec: Path, index: int) -> tuple[str, str, list[str]]:
    """For the Slurm task: (config, run name, overrides) of point `index` of a written sweep, whose content
    must still match the hash in its name (what `distgan sweep` wrote, not an edit since)."""
    text = spec.read_text()
    name = spec.name
    named = name.startswith("sweep-") and name.endswith(".json")
    if named and hashlib.sha256(text.encode()).hexdigest()[:16] != name[len("sweep-") : -len(".json")]:
        raise ConfigError(f"{spec} was changed after `distgan sweep` wrote it; submit the sweep again")
    info = json.loads(text)
    point = info["points"][index]
    return info["config"], point["name"], point["overrides"]
