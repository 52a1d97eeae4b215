"""Benchmark: the HTTP service under load on loopback (``intentrec serve`` in its own process).

For each model (IntentRec V3 trained on ML-100K and on the synthetic world; trained here first if
``bench/runs/serve-*`` does not hold them yet), the script starts the service, waits for ``/readyz``
and drives it with an async httpx load generator: closed-loop clients, each sending its next request
as soon as the previous one is answered, for a fixed time after a warm-up.

Scenarios: the home page (6 rows x 10 items) with 16 clients, "up next" with 16 clients, up next
half a second after a play event for the same user (the event starts the forward pass), the home
page while another client posts events, and overload (200 clients against ``--max-inflight 64``).
Each model is served twice: with the inference cache (the default; the clients draw from 500 users,
so after the warm-up most requests are repeat visits answered from it) and with ``--cache-mb 0``
(every request runs the model, as the first request after a new event does).
Reported: P50/P95/P99 latency (ms), throughput (requests/s), status codes, fallback answers, server
peak RSS (all its processes), and the mean forward-pass batch size from the service's own /metrics.
The load generator runs on the same machine and competes with the service for its cores. Results:
bench/results/serve.{json,md}.

    python bench/serve.py                      # both models, every scenario
    python bench/serve.py --data ml-100k --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from speed_models import machine, provenance

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "bench" / "runs"
RESULTS = REPO / "bench" / "results"
TRAIN = {  # the frozen config, fewer epochs: latency does not depend on how well the model is trained
    "ml-100k": ["--config", str(REPO / "configs" / "ml-100k" / "intentrec-v3.toml"), "--set", "train.epochs=5"],
    "synthetic": ["--config", str(REPO / "configs" / "synthetic" / "intentrec-v3.toml"), "--set", "train.epochs=3"],
}
TARGETS = {"home_p95_ms": 25.0, "home_p99_ms": 50.0, "next_p95_ms": 10.0}
# scenarios run with the cache off too
UNCACHED = ("home_16", "next_16", "next_after_play_16", "home_16_paced_200rps", "next_16_paced_200rps")
PLAY_GAP = 0.5  # seconds between a play event and the up next request (the credits roll far later)


def ensure_run(data: str, env: dict[str, str]) -> Path:
    run = RUNS / f"serve-{data}"
    if not (run / "summary.json").exists():
        print(f"training {data} model into {run} ...", flush=True)
        command = [sys.executable, "-m", "intentrec.cli", "train", *TRAIN[data], "--out", str(run)]
        if (run / "config.toml").exists():
            command.append("--resume")
        subprocess.run(command, env=env, check=True)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (the worker processes of --workers N)."""
    total, pending = 0.0, [pid]
    while pending:
        p = pending.pop()
        try:
            text = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        total += int(match.group(1)) / 1024 if match else 0.0
        pending += [int(c) for c in children]
    return total


class Peak(threading.Thread):
    """Samples the server's resident memory every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Connection:
    """A minimal HTTP/1.1 keep-alive client on one socket: the load generator shares the machine with
    the service, so it must cost far less CPU per request than the service (httpx costs about as much)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, content

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def drive(
    port: int,
    paths: list[str],
    clients: int,
    seconds: float,
    warmup: float,
    events: list[dict[str, Any]] | None = None,
    rate: float | None = None,
    play: tuple[list[str], list[str], float] | None = None,
) -> dict[str, Any]:
    """Clients for ``warmup + seconds``; latencies of the last ``seconds`` only. Closed loop (each
    client sends its next request when the last is answered), or paced: each client waits an
    exponential think time so that all together offer ``rate`` requests per second. With ``play``
    (users, items, gap): each client posts a play event for a user, waits ``gap`` seconds, then asks for
    that user's up next; only the up next requests are timed."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    fallbacks = 0
    retry_after: set[str] = set()
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + seconds

    async def worker(seed: int) -> None:
        nonlocal fallbacks
        rng = random.Random(seed)
        connection = Connection("127.0.0.1", port)
        while (now := time.perf_counter()) < stop:
            path = rng.choice(paths)
            if play is not None:
                user = rng.choice(play[0])
                event = {"user": user, "item": rng.choice(play[1]), "timestamp": int(time.time())}
                await connection.request("POST", "/v1/events", json.dumps({"events": [event]}).encode())
                await asyncio.sleep(play[2])
                path, now = f"/v1/users/{user}/next?k=10", time.perf_counter()
            t0 = time.perf_counter()
            status, headers, content = await connection.request("GET", path)
            elapsed = time.perf_counter() - t0
            if now >= measure_from:
                latencies.append(elapsed)
                codes[status] = codes.get(status, 0) + 1
                if status == 503:
                    retry_after.add(headers.get("retry-after", ""))
                elif b'"source":"fallback"' in content:
                    fallbacks += 1
            if rate:
                await asyncio.sleep(rng.expovariate(rate / clients))
        await connection.close()

    async def writer() -> None:
        assert events is not None
        connection = Connection("127.0.0.1", port)
        n = 0
        while time.perf_counter() < stop:
            batch = events[n % len(events) : n % len(events) + 20]
            status, _, content = await connection.request("POST", "/v1/events", json.dumps({"events": batch}).encode())
            if status != 200:
                raise RuntimeError(f"POST /v1/events answered {status}: {content[:200]!r}")
            n += 20
            await asyncio.sleep(0.01)
        await connection.close()

    await asyncio.gather(*[worker(i) for i in range(clients)], *([writer()] if events else []))
    return {
        "clients": clients,
        "offered_rps": rate,
        "seconds": seconds,
        "requests": len(latencies),
        "throughput_rps": len(latencies) / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies) if latencies else float("nan"),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
        "status": {str(k): v for k, v in sorted(codes.items())},
        "fallback_answers": fallbacks,
        "retry_after": sorted(retry_after),
    }


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def bench_model(data: str, args: argparse.Namespace, env: dict[str, str], cache: bool) -> dict[str, Any]:
    run = ensure_run(data, env)
    users = pl.read_parquet(run / "data" / "users.parquet")["user"].to_list()
    items = pl.read_parquet(run / "data" / "items.parquet")["item"].to_list()
    rng = random.Random(0)
    sample = rng.sample(users, min(500, len(users)))
    port = free_port()
    db = Path(tempfile.mkdtemp()) / "events.db"
    command = [sys.executable, "-m", "intentrec.cli", "serve", str(run), "--port", str(port), "--db", str(db),
               "--threads", str(args.threads), "--workers", str(args.workers), "--max-inflight", "64",
               "--seed", "0", *([] if cache else ["--cache-mb", "0"])]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"the service exited: {server.stdout.read() if server.stdout else ''}")
            time.sleep(0.1)
        processes: set[int] = set()  # /readyz answers when one process is up: wait for every one of them
        deadline = time.monotonic() + 300
        while len(processes) < args.workers:
            processes.add(httpx.get(f"{base}/v1/model", timeout=5).json()["process"])  # a fresh connection each
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(processes)} of {args.workers} service processes answered")
        idle_rss = rss_mb(server.pid)
        peak = Peak(server.pid)
        peak.start()
        home = [f"/v1/users/{u}/home?rows=6&k=10" for u in sample]
        up_next = [f"/v1/users/{u}/next?k=10" for u in sample]
        now = int(time.time())
        events = [{"user": rng.choice(sample), "item": rng.choice(items), "timestamp": now + i} for i in range(5000)]
        scenarios: dict[str, Any] = {}
        plan = [
            ("home_16", home, 16, None, None, None),
            ("next_16", up_next, 16, None, None, None),
            ("next_after_play_16", up_next, 16, None, None, (sample, items, PLAY_GAP)),
            ("home_16_with_events", home, 16, events, None, None),
            ("home_16_paced_200rps", home, 16, None, 200.0, None),
            ("next_16_paced_200rps", up_next, 16, None, 200.0, None),
            ("home_overload_200", home, 200, None, None, None),
        ]
        for name, paths, clients, stream, rate, play in plan:
            if (args.only and name not in args.only) or (not cache and name not in UNCACHED):
                continue
            print(f"  {data}: {name} ...", flush=True)
            scenarios[name] = asyncio.run(drive(port, paths, clients, args.seconds, args.warmup, stream, rate, play))
            print("    " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in scenarios[name].items()), flush=True)  # fmt: skip
        metrics = httpx.get(f"{base}/metrics").text
        peak.stopped.set()
        batches = metric_sum(metrics, "intentrec_model_batch_size_count")
        return {
            "run": str(run.relative_to(REPO)),
            "users": len(users),
            "items": len(items),
            "idle_rss_mb": idle_rss,
            "peak_rss_mb": peak.peak,
            "server_alive_after_overload": server.poll() is None,
            "mean_forward_batch": metric_sum(metrics, "intentrec_model_batch_size_sum") / max(batches, 1),
            "cache": cache,
            "answers_from_cache": metric_sum(metrics, 'intentrec_inferences_total{source="cache"}'),
            "answers_from_model": metric_sum(metrics, 'intentrec_inferences_total{source="model"}'),
            "scenarios": scenarios,
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def write_report(results: dict[str, Any], command: str, args: argparse.Namespace) -> None:
    record = {
        "benchmark": "serve",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine("cpu"),
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "torch_threads": args.threads,
            "workers": args.workers,
        },
        "targets": TARGETS,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Service under load (loopback)",
        "",
        *provenance(command, record, "; the load generator shares the machine with the service"),
        f"Closed-loop clients (paced: exponential think time, 200 requests/s offered in all), "
        f"{args.seconds:g} s measured after {args.warmup:g} s of warm-up; service "
        f"`--workers {args.workers} --threads {args.threads} --max-inflight 64`. Targets: home P95 <= 25 ms and "
        "P99 <= 50 ms at 16 clients, up next P95 <= 10 ms. Each model is served with the inference cache (the "
        "default: 500 users drawn again and again, so most answers after the warm-up are repeat visits served "
        'from it) and with `--cache-mb 0` ("cache off": every request runs the model). `next_after_play_16`: '
        f"each client posts a play event for a user, waits {PLAY_GAP:g} s, then asks for that user's up next "
        "(only that request is timed); with the cache the event has started the forward pass, without it the "
        "request runs it.",
        "",
        "| model | scenario | clients | req/s | P50 ms | P95 ms | P99 ms | status | fallbacks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data, r in results.items():
        for name, s in r["scenarios"].items():
            status = ", ".join(f"{k}: {v}" for k, v in s["status"].items())
            lines.append(f"| {data} ({r['items']:,} items) | {name} | {s['clients']} | {s['throughput_rps']:.0f} | "
                         f"{s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} | {status} | "
                         f"{s['fallback_answers']} |")  # fmt: skip
    lines += ["", "| model | idle RSS MB | peak RSS MB | answers from the cache | mean requests per forward pass | "
              "alive after overload |", "|---|---|---|---|---|---|"]  # fmt: skip
    for data, r in results.items():
        answers = r["answers_from_cache"] + r["answers_from_model"]
        lines.append(f"| {data} | {r['idle_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['answers_from_cache'] / max(answers, 1):.0%} | {r['mean_forward_batch']:.1f} | "
                     f"{r['server_alive_after_overload']} |")  # fmt: skip
    (RESULTS / "serve.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", nargs="*", default=list(TRAIN), choices=list(TRAIN))
    parser.add_argument("--only", nargs="*", help="run only these scenarios (default: all)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per service process")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="service processes (default: 2, the cores)"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("INTENTREC_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    results = {}
    for data in args.data:
        results[data] = bench_model(data, args, env, cache=True)
        results[f"{data}, cache off"] = bench_model(data, args, env, cache=False)
    write_report(results, "python bench/serve.py " + " ".join(sys.argv[1:]), args)
    print(f"-> {RESULTS / 'serve.md'}")


if __name__ == "__main__":
    main()
