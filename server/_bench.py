"""`lmrec bench server`: the gRPC server measured from outside, as an operator would.

It starts its own `lmrec serve` (a subprocess on 127.0.0.1, a free port, a temporary state
directory), drives it from this process with bounded load, and stops it. Every step has a fixed
length (`seconds`) and a cap on its calls, and the whole run has a time budget (5 minutes by
default): a step that would not fit is reported as skipped, never run late.

- `Embed`, one text per call, closed loop at 1, 8, 32 and 128 concurrent clients; the same texts
  through an in-process `Recommender.embed_texts` in batches of 32, measured in the same run
  (half just before, half just after the 32-client step, so that both see the same host load),
  with the SDK's default ONNX Runtime threads (the headline ratio) and with one thread.
- `Recommend` (a history of 20 known ids, k 10) open loop at offered rates: each call is sent at
  its scheduled time whatever happened to earlier ones, and its latency counts from that time, so
  queueing in the server (or a late generator) shows. Errors are counted by status code: a server
  past its capacity should answer RESOURCE_EXHAUSTED quickly rather than DEADLINE_EXCEEDED late.
- `Search` (32 clients) and `UpsertItems` (batches of 100 texts) throughput.

The load generator is one asyncio event loop (grpc.aio). On a small host it competes with the
server for the cores, so every step reports the CPU share of both processes (1.0 = one core) and
the generator's own lateness in sending (`send_lag_p99_ms`), and for how long the threads of
each process waited for a CPU (`*_wait_for_cpu`, seconds per second, from Linux's schedstat).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from lmrec import LmrecError, Recommender, TextEncoder

from ._client import RecommenderClient
from .v1 import recommender_pb2 as pb
from .v1 import recommender_pb2_grpc as pb_grpc

EMBED_CLIENTS = (1, 8, 32, 128)
RECOMMEND_RATES = (50, 100, 200, 400, 800)
HISTORY = 20
K = 10
UPSERT_BATCH = 100
SEARCH_CLIENTS = 32
INPROCESS_BATCH = 32
HELD_P99_MS = 50.0
CALL_TIMEOUT_S = 2.0  # the deadline of every measured call but upserts
UPSERT_TIMEOUT_S = 10.0
MAX_CALLS = 200_000  # per step, whatever its length
TARGETS = {"embed_grpc_vs_inprocess_c32": ">= 0.8", "recommend_p99_ms_at_200rps": "<= 20",
           "recommend_max_rps": ">= 500"}
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_delay(pid: int) -> float | None:
    """Seconds the threads of a process have waited on a run queue for a CPU (Linux schedstat)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9


class Usage:
    """CPU used by this process and the server during one step, as shares of one core, and how
    long the server's threads waited for a CPU (per second of the step): on a host shared with
    other work, that wait, not the server's own work, is what a tail latency is made of."""

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._server = _cpu_seconds(server_pid)
        self._delay = _run_delay(server_pid)
        self._own_delay = _run_delay(os.getpid())

    def done(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        server_now, delay_now = _cpu_seconds(self._pid), _run_delay(self._pid)
        server = None if server_now is None or self._server is None else round((server_now - self._server) / wall, 3)
        delay = None if delay_now is None or self._delay is None else round((delay_now - self._delay) / wall, 3)
        own_now = _run_delay(os.getpid())
        own = None if own_now is None or self._own_delay is None else round((own_now - self._own_delay) / wall, 3)
        return {"seconds": round(wall, 2), "generator_cpu": round((time.process_time() - self._own) / wall, 3),
                "server_cpu": server, "server_wait_for_cpu": delay, "generator_wait_for_cpu": own}


def percentile_ms(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile of latencies in seconds, in milliseconds (None for no values)."""
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 2) if len(values) else None


def _code(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code().name)
    return type(error).__name__


@dataclass
class _Step:
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {"ok": len(self.latencies), "p50_ms": percentile_ms(self.latencies, 50),
                "p99_ms": percentile_ms(self.latencies, 99),
                "errors": dict(sorted(self.errors.items()))}


async def closed_loop(call: Callable[[int], Awaitable[Any]], clients: int, seconds: float) -> _Step:
    """`clients` callers, each sending its next call when the previous one is answered."""
    step, loop = _Step(), asyncio.get_running_loop()
    stop_at, numbers = loop.time() + seconds, itertools.count()

    async def client() -> None:
        while loop.time() < stop_at:
            n = next(numbers)
            if n >= MAX_CALLS:
                return
            started = time.perf_counter()
            try:
                await call(n)
            except Exception as e:  # noqa: BLE001 - counted by status code
                step.errors[_code(e)] += 1
            else:
                step.latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(clients)))
    return step


async def open_loop(call: Callable[[int], Awaitable[Any]], rate: float, seconds: float) -> tuple[_Step, list[float]]:
    """Call number n is sent at start + n / rate; its latency counts from that scheduled time."""
    step, loop = _Step(), asyncio.get_running_loop()
    count = min(int(rate * seconds), MAX_CALLS)
    lags: list[float] = []

    async def one(n: int, scheduled: float) -> None:
        try:
            await call(n)
        except Exception as e:  # noqa: BLE001 - counted by status code
            step.errors[_code(e)] += 1
        else:
            step.latencies.append(loop.time() - scheduled)

    start = loop.time() + 0.01
    tasks = []
    for n in range(count):
        scheduled = start + n / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(loop.time() - scheduled, 0.0))
        tasks.append(asyncio.ensure_future(one(n, scheduled)))
    await asyncio.gather(*tasks)
    return step, lags


class _ServeProcess:
    """`lmrec serve` on 127.0.0.1, a free port and a temporary state directory."""

    def __init__(self, bundle: Path, work: Path, serve_args: Sequence[str]) -> None:
        self.log = work / "serve.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "lmrec", "serve", "--bundle", str(bundle), "--state-dir", str(work / "state"),
               "--host", "127.0.0.1", "--port", "0", "--grace", "2", *serve_args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.args = list(serve_args)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LmrecError(f"lmrec serve exited with {self.proc.returncode}:\n{self.output()[-2000:]}")
            if port is None:
                found = _LISTENING.findall(self.output())
                port = int(found[-1]) if found else None
            if port is not None:
                with RecommenderClient(f"127.0.0.1:{port}", timeout=2, max_attempts=1) as client:
                    try:
                        if client.health(timeout=1) == "SERVING":
                            return port
                    except LmrecError:
                        pass
            time.sleep(0.1)
        raise LmrecError(f"lmrec serve was not serving within {timeout:.0f} s:\n{self.output()[-2000:]}")

    def budget(self) -> str | None:
        """The thread budget the server logged when it loaded the bundle."""
        found = re.findall(r"thread budget: (.*)", self.output())
        return found[-1].strip() if found else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class _Bench:
    def __init__(self, rec: Recommender, texts: list[str], server: _ServeProcess, port: int, seconds: float,
                 deadline: float, progress: bool) -> None:
        self.rec, self.texts, self.server = rec, texts, server
        self.address = f"127.0.0.1:{port}"
        self.seconds, self.deadline, self.progress = seconds, deadline, progress
        self.skipped: list[str] = []
        self.one_thread: TextEncoder | None = None
        ids = rec.item_ids()
        rng = np.random.default_rng(0)
        histories = [rng.choice(len(ids), size=min(HISTORY, len(ids)), replace=False) for _ in range(512)]
        self.recommend_requests = [pb.RecommendRequest(history=[ids[i] for i in h], k=K) for h in histories]

    def fits(self, name: str, seconds: float) -> bool:
        if time.monotonic() + seconds + CALL_TIMEOUT_S + 5 > self.deadline:
            self.skipped.append(name)
            self.say(f"{name}: skipped (the run's time budget is spent)")
            return False
        return True

    def say(self, line: str) -> None:
        if self.progress:
            print(f"bench server: {line}", file=sys.stderr, flush=True)

    def inprocess(self, seconds: float, state: dict[str, dict[str, float]]) -> None:
        """Batches of 32 of the same texts through this process's Recommender (its default ONNX
        Runtime threads: what a user gets), then through an encoder with one thread (one core)."""
        if self.one_thread is None:
            self.one_thread = TextEncoder.from_bundle(self.rec.bundle, self.rec.device, self.rec.precision, threads=1)
        for name, embed in (("default", self.rec.embed_texts), ("one_thread", self.one_thread.embed)):
            stop_at = time.perf_counter() + seconds / 2
            started = time.perf_counter()
            n = 0
            while time.perf_counter() < stop_at:
                embed([self.texts[(n + i) % len(self.texts)] for i in range(INPROCESS_BATCH)],
                      batch_size=INPROCESS_BATCH)
                n += INPROCESS_BATCH
            totals = state.setdefault(name, {"texts": 0, "seconds": 0.0})
            totals["texts"] += n
            totals["seconds"] += time.perf_counter() - started

    async def run(self) -> dict[str, Any]:
        channels = [grpc.aio.insecure_channel(self.address, options=[("lmrec.bench.channel", i)]) for i in range(4)]
        stubs = [pb_grpc.RecommenderStub(c) for c in channels]
        try:
            await asyncio.gather(*(s.GetModelInfo(pb.GetModelInfoRequest(), timeout=10) for s in stubs))
            return await self._steps(stubs)
        finally:
            await asyncio.gather(*(c.close() for c in channels))

    async def _steps(self, stubs: list[Any]) -> dict[str, Any]:
        texts, seconds = self.texts, self.seconds

        def embed(n: int) -> Awaitable[Any]:
            return stubs[n % len(stubs)].Embed(pb.EmbedRequest(texts=[texts[n % len(texts)]]), timeout=CALL_TIMEOUT_S)

        # warm up: the first model runs, connections, the server's threads
        await closed_loop(embed, 8, min(2.0, seconds))
        embed_rows: list[dict[str, Any]] = []
        inproc: dict[str, dict[str, float]] = {}
        for clients in EMBED_CLIENTS:
            if not self.fits(f"embed c{clients}", seconds * (2 if clients == 32 else 1)):
                continue
            if clients == 32:
                self.inprocess(seconds / 2, inproc)
            usage = Usage(self.server.proc.pid)
            step = await closed_loop(embed, clients, seconds)
            row = {"clients": clients, **step.summary(), **usage.done()}
            row["texts_per_s"] = round(row["ok"] / row["seconds"], 1)
            embed_rows.append(row)
            if clients == 32:
                self.inprocess(seconds / 2, inproc)
            self.say(f"embed c{clients}: {row['texts_per_s']} texts/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms")
        rates = {k: round(v["texts"] / v["seconds"], 1) for k, v in inproc.items()}
        self.say(f"embed in-process (batches of {INPROCESS_BATCH}): {rates} texts/s")

        requests = self.recommend_requests

        def recommend(n: int) -> Awaitable[Any]:
            return stubs[n % len(stubs)].Recommend(requests[n % len(requests)], timeout=CALL_TIMEOUT_S)

        await closed_loop(recommend, 4, min(1.0, seconds))
        rec_rows: list[dict[str, Any]] = []
        for rate in RECOMMEND_RATES:
            if not self.fits(f"recommend {rate}/s", seconds):
                continue
            usage = Usage(self.server.proc.pid)
            step, lags = await open_loop(recommend, rate, seconds)
            row = {"offered_rps": rate, "sent": len(lags), **step.summary(), **usage.done(),
                   "send_lag_p99_ms": percentile_ms(lags, 99)}
            row["achieved_rps"] = round(row["ok"] / row["seconds"], 1)
            row["held"] = not row["errors"] and row["p99_ms"] is not None and row["p99_ms"] <= HELD_P99_MS
            rec_rows.append(row)
            self.say(f"recommend {rate}/s: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, errors {row['errors']}, "
                     f"generator cpu {row['generator_cpu']}, server cpu {row['server_cpu']}")
            await asyncio.sleep(0.5)  # let a backlog drain before the next rate

        other: dict[str, Any] = {}
        if self.fits("search", seconds):
            def search(n: int) -> Awaitable[Any]:
                request = pb.SearchRequest(text=texts[n % len(texts)], k=K)
                return stubs[n % len(stubs)].Search(request, timeout=CALL_TIMEOUT_S)

            usage = Usage(self.server.proc.pid)
            step = await closed_loop(search, SEARCH_CLIENTS, seconds)
            other["search"] = {"clients": SEARCH_CLIENTS, **step.summary(), **usage.done()}
            other["search"]["queries_per_s"] = round(other["search"]["ok"] / other["search"]["seconds"], 1)
            self.say(f"search c{SEARCH_CLIENTS}: {other['search']['queries_per_s']} queries/s")
        if self.fits("upsert", seconds + UPSERT_TIMEOUT_S):
            def upsert(n: int) -> Awaitable[Any]:
                items = [pb.Item(id=f"bench-upsert-{n}-{i}", text=texts[(n * UPSERT_BATCH + i) % len(texts)])
                         for i in range(UPSERT_BATCH)]
                return stubs[0].UpsertItems(pb.UpsertItemsRequest(items=items), timeout=UPSERT_TIMEOUT_S)

            usage = Usage(self.server.proc.pid)
            step = await closed_loop(upsert, 1, seconds)
            other["upsert"] = {"clients": 1, "batch": UPSERT_BATCH, **step.summary(), **usage.done()}
            other["upsert"]["items_per_s"] = round(other["upsert"]["ok"] * UPSERT_BATCH / other["upsert"]["seconds"], 1)
            self.say(f"upsert: {other['upsert']['items_per_s']} items/s")
        return _report(embed_rows, rates, rec_rows, other)


def _report(embed_rows: list[dict[str, Any]], inproc: dict[str, float], rec_rows: list[dict[str, Any]],
            other: dict[str, Any]) -> dict[str, Any]:
    c32 = next((r for r in embed_rows if r["clients"] == 32), None)

    def vs(name: str) -> float | None:
        return round(c32["texts_per_s"] / inproc[name], 3) if c32 and inproc.get(name) else None

    at200 = next((r for r in rec_rows if r["offered_rps"] == 200), None)
    held = 0
    for row in sorted(rec_rows, key=lambda r: r["offered_rps"]):
        if not row["held"]:
            break
        held = row["offered_rps"]
    return {
        "embed_grpc_vs_inprocess_c32": vs("default"),
        "recommend_p99_ms_at_200rps": at200["p99_ms"] if at200 else None,
        "recommend_max_rps": held,
        "targets": TARGETS,
        "embed": {"grpc": embed_rows, "inprocess_batch32_texts_per_s": inproc.get("default"),
                  "inprocess_batch32_one_thread_texts_per_s": inproc.get("one_thread"),
                  "grpc_c32_vs_inprocess_one_thread": vs("one_thread")},
        "recommend": rec_rows,
        **other,
    }


def bench_server(bundle: str | os.PathLike[str], json_path: str | os.PathLike[str] | None = None,
                 seconds: float = 10.0, budget_s: float = 270.0, serve_args: Sequence[str] = (),
                 progress: bool = True) -> dict[str, Any]:
    """Run the server benchmark on `bundle` (see the module docstring); write `json_path` if given.

    `seconds` is the length of each measured step; `budget_s` bounds the run up to the server's
    stop (steps that would not fit are skipped and listed; stopping takes seconds more: the server
    runs with --grace 2); `serve_args` are extra `lmrec serve` flags.
    """
    if not 0 < seconds <= 120:
        raise ValueError(f"seconds: {seconds:g}, must be > 0 and <= 120")
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise LmrecError(f"--bundle {bundle}: not a directory")
    started = time.monotonic()
    deadline = started + budget_s
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lmrec-bench-server-") as tmp:
        server = _ServeProcess(bundle, Path(tmp), serve_args)
        try:
            rec = Recommender.load(bundle, verify=False)
            ids = rec.item_ids()
            texts = [rec.get_item(i).text or i for i in ids[:4096]]
            port = server.wait_serving(max(10.0, min(180.0, deadline - time.monotonic() - 10)))
            bench = _Bench(rec, texts, server, port, seconds, deadline, progress)
            result = asyncio.run(bench.run())
            budget = server.budget()
        finally:
            server.stop()
    result = {
        **{k: result.pop(k) for k in TARGETS},
        "bundle": {"path": str(bundle.resolve()), "items": len(ids), "dim": rec.dim, "precision": rec.precision},
        "server": {"command": " ".join(["lmrec serve --host 127.0.0.1 --port 0", *server.args]),
                   "thread_budget": budget},
        "host": {"cpus": os.cpu_count(), "nice": os.nice(0), "loadavg_start": [round(x, 2) for x in load_start],
                 "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "seconds_per_step": seconds, "call_timeout_s": CALL_TIMEOUT_S, "held_means": f"no errors and p99 <= "
        f"{HELD_P99_MS:g} ms", "skipped": bench.skipped, "run_seconds": round(time.monotonic() - started, 1),
        **result,
    }
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_server_bench(result: dict[str, Any]) -> str:
    """The report as text tables."""
    lines = [f"bundle {result['bundle']['path']} ({result['bundle']['items']} items, {result['bundle']['precision']}); "
             f"load average {result['host']['loadavg_start'][0]} -> {result['host']['loadavg_end'][0]} on "
             f"{result['host']['cpus']} cpus", "",
             "Embed (one text per call)  clients  texts/s  p50 ms  p99 ms  errors  gen cpu  server cpu  cpu wait"]
    for r in result["embed"]["grpc"]:
        lines.append(f"{'':27}{r['clients']:>7}  {r['texts_per_s']:>7}  {r['p50_ms']!s:>6}  {r['p99_ms']!s:>6}  "
                     f"{sum(r['errors'].values()):>6}  {r['generator_cpu']:>7}  {r['server_cpu']!s:>10}  "
                     f"{r['server_wait_for_cpu']!s:>8}")
    embed = result["embed"]
    lines.append(f"in-process embed_texts, batches of {INPROCESS_BATCH}: {embed['inprocess_batch32_texts_per_s']} "
                 f"texts/s (default threads), {embed['inprocess_batch32_one_thread_texts_per_s']} (one thread); "
                 f"gRPC c32 / in-process = {result['embed_grpc_vs_inprocess_c32']} "
                 f"({embed['grpc_c32_vs_inprocess_one_thread']} vs one thread)")
    lines += ["", "Recommend (open loop)  offered/s  ok/s  p50 ms  p99 ms  errors  gen cpu  server cpu  cpu wait  held"]
    for r in result["recommend"]:
        errors = ",".join(f"{k}:{v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"{'':23}{r['offered_rps']:>9}  {r['achieved_rps']:>4}  {r['p50_ms']!s:>6}  {r['p99_ms']!s:>6}  "
                     f"{errors:>6}  {r['generator_cpu']:>7}  {r['server_cpu']!s:>10}  {r['server_wait_for_cpu']!s:>8}  "
                     f"{r['held']}")
    for name, unit in (("search", "queries_per_s"), ("upsert", "items_per_s")):
        if name in result:
            r = result[name]
            lines.append(f"{name}: {r[unit]} {unit.replace('_per_s', '')}/s, p50 {r['p50_ms']} ms, "
                         f"p99 {r['p99_ms']} ms, errors {r['errors'] or 0}")
    lines += ["", f"embed_grpc_vs_inprocess_c32 {result['embed_grpc_vs_inprocess_c32']}, recommend_p99_ms_at_200rps "
              f"{result['recommend_p99_ms_at_200rps']}, recommend_max_rps {result['recommend_max_rps']}"]
    if result["skipped"]:
        lines.append(f"skipped (time budget): {', '.join(result['skipped'])}")
    return "\n".join(lines)


__all__ = ["bench_server", "format_server_bench", "closed_loop", "open_loop", "Usage", "percentile_ms"]
