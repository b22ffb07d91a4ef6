"""Benchmark the main job: wall time and peak memory of `make run`'s command, `python jobs/tune_pacs.py --smoke-test`.

Runs the job as a subprocess of this script, `--rounds` times, each with a fresh storage folder (so
nothing is resumed) and with RAY_ADDRESS unset (so the job starts its own local Ray, whose processes
are its descendants). Its whole process tree (the driver, GCS, raylet, dashboard, Ray workers, Ray
Train and Tune actors) is sampled every --interval seconds with psutil, and each round reports:
  - wall seconds of the job, from start to exit;
  - peak PSS of the tree: the sum over its processes of their proportional set size, so pages they
    share (Python and torch libraries, Ray's object store in /dev/shm) count once - the figure to size
    a machine by;
  - peak RSS of the tree (the same sum with shared pages counted in every process: an upper bound);
  - the largest single process's peak RSS, and the most processes at once;
  - the load average before and after (the machine is shared: wall time moves with it).
The kernel's own maximum RSS of any waited-for descendant (what `/usr/bin/time -v` prints as "Maximum
resident set size": one process, not the tree) is printed too. Medians over the rounds at the end.

One machine (a few minutes per round on 2 cores):
    python jobs/bench_main.py
    python jobs/bench_main.py --rounds 3 --json bench-main.json
    python jobs/bench_main.py --smoke-test                # the job with --dry-run: checks this script only
The same job under /usr/bin/time, for comparison (one process's peak, not the tree's):
    /usr/bin/time -v python jobs/tune_pacs.py --smoke-test
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # this checkout's package first
from bench_common import parse, write_bench_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GB = 1024**3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-test", action="store_true",
                        help="run the job with --dry-run (seconds): checks this benchmark, measures nothing")
    parser.add_argument("--job", default="jobs/tune_pacs.py", help="the job script, relative to the repository")
    parser.add_argument("--job-args", default="--smoke-test", help="the job's arguments (one string)")
    parser.add_argument("--rounds", type=int, default=1, help="run the job this many times; medians are reported")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples of the process tree")
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--workdir", default="", help="the job's storage folders (default: a temporary directory)")

    def resolve(args: argparse.Namespace) -> None:
        if args.smoke_test and "--dry-run" not in args.job_args.split():
            args.job_args += " --dry-run"
        if not (REPO / args.job).is_file():
            raise ValueError(f"--job {args.job!r}: no such script in {REPO}")
        if args.rounds < 1 or args.interval <= 0:
            raise ValueError(f"--rounds ({args.rounds}) must be >= 1 and --interval ({args.interval}) > 0")

    return parse(parser, argv, resolve)


class TreeSampler:
    """Samples a process and all its descendants every `interval` seconds until `stop`; keeps the peaks."""

    def __init__(self, pid: int, interval: float) -> None:
        import psutil

        self.root, self.interval = psutil.Process(pid), interval
        self.peak = {"pss": 0, "rss": 0, "largest_rss": 0, "processes": 0, "samples": 0}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        pss = rss = largest = 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            pss, rss, largest = pss + getattr(info, "pss", info.rss), rss + info.rss, max(largest, info.rss)
        for key, value in (("pss", pss), ("rss", rss), ("largest_rss", largest), ("processes", len(processes))):
            self.peak[key] = max(self.peak[key], value)
        self.peak["samples"] += 1

    def _run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._done.set()
        self._thread.join()


def one_round(number: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, str(REPO / args.job), *args.job_args.split(),
               "--storage", str(workdir / f"sweep-{number}-{time.time_ns()}")]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        with TreeSampler(process.pid, args.interval) as sampler:
            code = process.wait()
        wall = time.perf_counter() - started
        if code != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited {code}:\n{log.read().decode()[-4000:]}")
    kernel_max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    result = {"wall_seconds": wall, **{f"peak_{k}": v for k, v in sampler.peak.items()},
              "kernel_max_rss": kernel_max_rss, "load": [load_before, os.getloadavg()[0]]}
    print(f"[{number}] {args.job} {args.job_args}: wall {wall:.1f} s; peak PSS of the process tree "
          f"{result['peak_pss'] / GB:.2f} GB (RSS summed {result['peak_rss'] / GB:.2f} GB); largest process "
          f"{result['peak_largest_rss'] / GB:.2f} GB RSS (kernel max RSS so far {kernel_max_rss / GB:.2f} GB); "
          f"up to {result['peak_processes']} processes; {result['peak_samples']} samples; load "
          f"{load_before:.1f}->{result['load'][1]:.1f}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="reasonbed-bench-main-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir {workdir}; {os.cpu_count()} cores; {args.job} {args.job_args}", flush=True)
    rounds = [one_round(number, args, workdir) for number in range(1, args.rounds + 1)]
    summary = {key: statistics.median(r[key] for r in rounds)
               for key in ("wall_seconds", "peak_pss", "peak_rss", "peak_largest_rss")}
    print(f"== median over {len(rounds)} round(s): wall {summary['wall_seconds']:.1f} s, peak PSS "
          f"{summary['peak_pss'] / GB:.2f} GB, peak RSS summed {summary['peak_rss'] / GB:.2f} GB, largest process "
          f"{summary['peak_largest_rss'] / GB:.2f} GB")
    write_bench_results(args.json, args, rounds, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
