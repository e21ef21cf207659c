"""How much of `lmrec serve`'s Recommend latency is lmrec's, and how much the floor of Python gRPC
on this host: the product beside reference servers, driven by the same open-loop generator.

    cd /work/main && .venv/bin/python bench/bench_server_floor.py --bundle DIR \\
        --json bench/results/server-floor.json          # about 6 minutes; quiet host

Servers, each a subprocess on 127.0.0.1 with one BLAS thread and one ONNX Runtime thread:

- noop-sync / noop-aio: Recommend answers an empty response at once (grpc.server with a thread
  pool of 64 / grpc.aio): what the transport and the load generator cost alone;
- compute-sync / compute-aio: Recommend runs `Recommender.recommend` on the bundle and converts
  the results, nothing else (no admission, validation, auth); aio computes on its event loop, so no
  thread hand-offs at all: the best a Python server can do with this compute;
- lmrec: `lmrec serve` with its defaults, as `lmrec bench server` starts it.

Each offered rate (open loop, the generator of `lmrec bench server`: latency from the scheduled
send time) runs `--seconds` per server, servers rotated per round, `--rounds` rounds; the JSON
keeps every round and the median p99 per server and rate. Also: in-process `recommend` on one
thread (median of repeats), the per-call compute every compute server pays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SERVERS = ("noop-sync", "noop-aio", "compute-sync", "compute-aio", "lmrec")
RATES = (200, 400, 800)
CALL_TIMEOUT_S = 2.0  # as lmrec bench server
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def _reference_server(kind: str, bundle: str) -> None:
    """Run one reference server (this file with --serve); prints its port, serves until killed."""
    from concurrent import futures

    import grpc
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    from lmrec import Recommender
    from lmrec.server.v1 import recommender_pb2 as pb
    from lmrec.server.v1 import recommender_pb2_grpc as pb_grpc

    rec = Recommender.load(bundle, verify=False, threads=1) if kind.startswith("compute") else None

    def answer(request: Any) -> Any:
        if rec is None:
            return pb.RecommendResponse()
        found = rec.recommend(history=list(request.history), k=request.k)
        return pb.RecommendResponse(items=[pb.ScoredItem(id=item, score=float(score)) for item, score in found],
                                    unknown_ids=list(found.unknown_ids))

    class Sync(pb_grpc.RecommenderServicer):
        def Recommend(self, request: Any, context: Any) -> Any:  # noqa: N802 - the proto's name
            return answer(request)

    class Aio(pb_grpc.RecommenderServicer):
        async def Recommend(self, request: Any, context: Any) -> Any:  # noqa: N802
            return answer(request)

    if kind.endswith("sync"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        pb_grpc.add_RecommenderServicer_to_server(Sync(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_RecommenderServicer_to_server(Aio(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def _start(kind: str, bundle: str, work: Path) -> tuple[subprocess.Popen, int]:
    log = open(work / f"{kind}.log", "wb")  # noqa: SIM115 - the process owns it until it ends
    if kind == "lmrec":
        cmd = [sys.executable, "-m", "lmrec", "serve", "--bundle", bundle, "--state-dir", str(work / "state"),
               "--host", "127.0.0.1", "--port", "0"]
    else:
        cmd = [sys.executable, __file__, "--serve", kind, "--bundle", bundle]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} exited: {(work / f'{kind}.log').read_text()[-2000:]}")
        found = _LISTENING.findall((work / f"{kind}.log").read_text(errors="replace"))
        if found and (kind != "lmrec" or "loaded" in (work / f"{kind}.log").read_text(errors="replace")):
            return proc, int(found[-1])
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{kind} did not start within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _drive(port: int, requests: list[Any], seconds: float, pid: int) -> list[dict[str, Any]]:
    import grpc
    from lmrec.server import Usage, closed_loop, open_loop, percentile_ms
    from lmrec.server.v1 import recommender_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("lmrec.bench.channel", i)])
                for i in range(4)]
    stubs = [pb_grpc.RecommenderStub(c) for c in channels]

    def call(n: int) -> Any:
        return stubs[n % len(stubs)].Recommend(requests[n % len(requests)], timeout=CALL_TIMEOUT_S)

    rows = []
    try:
        await closed_loop(call, 4, 1.0)  # warm up
        for rate in RATES:
            usage = Usage(pid)
            step, lags = await open_loop(call, rate, seconds)
            row = {"offered_rps": rate, **step.summary(), **usage.done(), "send_lag_p99_ms": percentile_ms(lags, 99)}
            if row["server_cpu"] is not None and row["ok"]:
                row["server_cpu_ms_per_call"] = round(row["server_cpu"] * row["seconds"] / row["ok"] * 1000, 3)
            rows.append(row)
            await asyncio.sleep(0.5)
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return rows


def _inprocess_ms(bundle: str, histories: list[list[str]]) -> float:
    from lmrec import Recommender
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        rec = Recommender.load(bundle, verify=False, threads=1)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for h in histories:
                rec.recommend(history=h, k=10)
            times.append((time.perf_counter() - started) / len(histories) * 1000)
        rec.close()
    return round(statistics.median(times), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--serve", choices=[s for s in SERVERS if s != "lmrec"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        _reference_server(args.serve, args.bundle)
        return
    import tempfile

    import numpy as np
    from lmrec import Recommender
    from lmrec.server.v1 import recommender_pb2 as pb

    rec = Recommender.load(args.bundle, verify=False)
    ids = rec.item_ids()
    rng = np.random.default_rng(0)
    histories = [[ids[i] for i in rng.choice(len(ids), size=min(20, len(ids)), replace=False)] for _ in range(512)]
    rec.close()
    requests = [pb.RecommendRequest(history=h, k=10) for h in histories]
    inprocess = _inprocess_ms(args.bundle, histories)
    print(f"in-process recommend, one thread: {inprocess} ms", file=sys.stderr)
    runs: dict[str, list[list[dict[str, Any]]]] = {s: [] for s in SERVERS}
    with tempfile.TemporaryDirectory(prefix="lmrec-floor-") as tmp:
        for round_ in range(args.rounds):
            order = SERVERS[round_ % len(SERVERS):] + SERVERS[:round_ % len(SERVERS)]
            for kind in order:
                work = Path(tmp) / f"{kind}-{round_}"
                work.mkdir()
                proc, port = _start(kind, args.bundle, work)
                try:
                    rows = asyncio.run(_drive(port, requests, args.seconds, proc.pid))
                finally:
                    _stop(proc)
                runs[kind].append(rows)
                print(f"round {round_} {kind}: " + ", ".join(
                    f"{r['offered_rps']}/s p50 {r['p50_ms']} p99 {r['p99_ms']} err {sum(r['errors'].values())} "
                    f"cpu/call {r.get('server_cpu_ms_per_call')} ms" for r in rows), file=sys.stderr)
    summary = {kind: {str(rate): {
        "p50_ms": statistics.median(r[i]["p50_ms"] for r in rounds),
        "p99_ms": statistics.median(r[i]["p99_ms"] for r in rounds),
        "p99_ms_rounds": [r[i]["p99_ms"] for r in rounds],
        "errors": sum(sum(r[i]["errors"].values()) for r in rounds),
        "server_cpu_ms_per_call": statistics.median(r[i].get("server_cpu_ms_per_call") or 0 for r in rounds),
    } for i, rate in enumerate(RATES)} for kind, rounds in runs.items()}
    result = {"bundle": {"path": str(Path(args.bundle).resolve()), "items": len(ids)},
              "inprocess_recommend_ms_one_thread": inprocess, "rates": list(RATES), "seconds_per_step": args.seconds,
              "rounds": args.rounds, "host": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
              "summary": summary, "runs": runs}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
