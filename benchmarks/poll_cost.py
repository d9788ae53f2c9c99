"""CPU cost of one status poll, without the scale effects: sequential polls, garbage collector off.

``triggerer_scale.py`` measures thousands of triggers at once, where the cost of a poll also
includes the garbage collections of everything the triggers keep alive and the cache misses of
touching thousands of objects; its figures move by ±15 % between runs on a shared machine. This
script isolates the code path of one poll: for each trigger kind it builds four triggers exactly
as ``triggerer_scale.py`` does (same nginx, same connections), resolves their connections, and
then, with the garbage collector disabled, awaits one status read after another
(``kind.interpret(await kind.afetch(hook, ref), ref)``, what a trigger does per poll; for the
minimal shared-session trigger its ``_poll``). Rounds of ``--polls`` reads rotate over the kinds,
so a slower minute of the machine hits every kind alike; the table shows the fastest and the
median round.

Usage::

    /work/venv-bench/bin/python benchmarks/poll_cost.py                 # all kinds, 15 rounds
    /work/venv-bench/bin/python benchmarks/poll_cost.py --rounds 5 --variants shared_aiohttp \\
        CogniteExtractionPipelineRunTrigger
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from status_server import NginxStatusServer, environment

RESULT_MARKER = "POLL-COST "
DEFAULT_VARIANTS = (
    "shared_aiohttp", "CogniteEntityMatchingPipelineRunTrigger", "CogniteAdvancedJoinQualityTrigger",
    "CogniteExtractionPipelineRunTrigger", "EdgeImpulsePipelineRunTrigger", "HerePipelineOperationTrigger",
)


async def _measure(names: Sequence[str], base_url: str, polls: int, rounds: int) -> dict[str, list[float]]:
    import triggerer_scale as ts

    from airflow_provider_pipelines.hooks._http import acquire_session, release_session
    from airflow_provider_pipelines.triggers.base import _connection_share

    entry = acquire_session()
    readers: dict[str, list[Callable[[], Awaitable[Any]]]] = {}
    try:
        for name in names:
            variant = ts.variant(name)
            triggers = ts.build_triggers(variant, 4, 5.0, base_url)
            if variant.role == "limit":
                fns: list[Callable[[], Awaitable[Any]]] = [t._poll for t in triggers]
            else:
                for t in triggers:
                    await _connection_share().attach(t.hook)

                def reader(t: Any) -> Callable[[], Awaitable[Any]]:
                    async def read() -> Any:
                        return t.kind.interpret(await t.kind.afetch(t.hook, t.ref), t.ref)
                    return read

                fns = [reader(t) for t in triggers]
            for fn in fns:  # warm up: connections, token, reused requests
                for _ in range(100):
                    await fn()
            readers[variant.name] = fns
        cost: dict[str, list[float]] = {name: [] for name in readers}
        gc.collect()
        gc.disable()
        try:
            for _ in range(rounds):
                for name, fns in readers.items():
                    started = time.process_time()
                    for i in range(polls):
                        await fns[i % len(fns)]()
                    cost[name].append((time.process_time() - started) / polls * 1e6)
        finally:
            gc.enable()
    finally:
        await release_session(entry)
        for session in list(ts._minimal_sessions.values()):
            await session.close()
    return cost


def _worker(spec: dict[str, Any]) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    cost = asyncio.run(_measure(spec["variants"], spec["base_url"], spec["polls"], spec["rounds"]))
    print(RESULT_MARKER + json.dumps(cost), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=1000, help="reads per kind and round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    with NginxStatusServer() as server:
        spec = {"variants": args.variants, "base_url": server.url, "polls": args.polls, "rounds": args.rounds}
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                              env=environment(server.url), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if proc.returncode or not lines:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    cost: dict[str, list[float]] = json.loads(lines[0][len(RESULT_MARKER):])
    limit = next((v for k, v in cost.items() if k.startswith("shared_aiohttp")), None)
    print(f"Sequential status reads, GC off: {args.rounds} rounds of {args.polls} reads per kind "
          f"(Python {sys.version.split()[0]})\n")
    print("trigger | fastest round us/poll | median us/poll | median x limit")
    print("--- | --- | --- | ---")
    for name, rounds in cost.items():
        ratio = statistics.median(rounds) / statistics.median(limit) if limit else float("nan")
        print(f"{name} | {min(rounds):.1f} | {statistics.median(rounds):.1f} | {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
