"""Run every benchmark with one command and print the tables and the targets.

    /work/venv-bench/bin/python benchmarks/run_all.py            # full run: N=1000,5000, 60 s windows
    /work/venv-bench/bin/python benchmarks/run_all.py --quick    # N=1000, 15 s windows (~4 min)
    /work/venv-bench/bin/python benchmarks/run_all.py --repeat 3 --json results/   # medians of 3

Exit status 0 when every target holds, 1 otherwise. Setup: see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import import_cost
import triggerer_scale


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nginx = "not installed"
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(binary).exists():
        nginx = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n".join([
        f"- machine: {os.cpu_count()} x {cpu}, {mem_gib:.0f} GiB RAM, Linux {platform.release()}",
        f"- Python {platform.python_version()}; apache-airflow {_version('apache-airflow')}; "
        f"aiohttp {_version('aiohttp')}; tenacity {_version('tenacity')}; nginx {nginx}",
        f"- peers: apache-airflow-providers-http {_version('apache-airflow-providers-http')}, "
        f"apache-airflow-providers-dbt-cloud {_version('apache-airflow-providers-dbt-cloud')}",
        f"- load average at start: {load}" + (
            "  (WARNING: other processes are using the CPUs; wall-clock figures are unreliable)"
            if os.getloadavg()[0] > (os.cpu_count() or 1) * 0.5 else ""),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=1000 only, short windows")
    parser.add_argument("--repeat", type=int, default=1, help="runs per triggerer phase (medians shown)")
    parser.add_argument("--import-repeat", type=int, default=7, help="runs per import measurement")
    parser.add_argument("--json", help="directory for triggerer.json and imports.json")
    parser.add_argument("--nice", type=int, default=0, help="niceness of the measured processes (e.g. -5)")
    parser.add_argument("--skip-imports", action="store_true")
    parser.add_argument("--skip-triggers", action="store_true")
    args = parser.parse_args(argv)

    started = time.time()
    print("## airflow-provider-pipelines benchmarks\n")
    print(machine() + "\n")
    status = 0
    if args.json:
        Path(args.json).mkdir(parents=True, exist_ok=True)
    if not args.skip_triggers:
        trig_args = ["--repeat", str(args.repeat), "--nice", str(args.nice)]
        trig_args += ["--quick"] if args.quick else []
        if args.json:
            trig_args += ["--json", str(Path(args.json) / "triggerer.json")]
        status |= triggerer_scale.main(trig_args)
    if not args.skip_imports:
        imp_args = ["--repeat", str(args.import_repeat), "--nice", str(args.nice)]
        if args.json:
            imp_args += ["--json", str(Path(args.json) / "imports.json")]
        status |= import_cost.main(imp_args)
    print(f"(load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"took {(time.time() - started) / 60:.1f} min)")
    return status


if __name__ == "__main__":
    sys.exit(main())
