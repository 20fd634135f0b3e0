"""Many cameras on one server, measured on this machine over loopback: `vinci-edge serve` (PyTriton's
Triton, in a process of its own) with the tiny engine (tiny towers + tiny LLM, fp32, ONNX Runtime
on the CPU), clients from `vinci_edge.serve.client`.

Parts (each can be run alone with --parts):
  streams   N = 1, 2, 4, 8 cameras at once, each a file played as live (real time, looped) with a
            question every --every seconds: answers per second, time to first token (p50 / p99, at
            the client: network and queueing included), frames dropped (client and server), the
            server's RSS (Python + tritonserver), how Triton batched the vision model, and every
            question counted as answered or refused (with the reasons)
  batching  the vision model alone: frames per second one request at a time against 8 clients at
            once (Triton's dynamic batcher joins their frames), in the same server

Writes work-dirs/bench/serve/report.json and report.md. About 3-4 minutes with the defaults.

    flock /tmp/vinci-bench.lock .venv/bin/python benchmarks/bench_serve.py [--seconds 20] [--every 4]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import BENCH, clip, engine_for, machine_info, print_machine, say

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's vinci_edge, also from a git worktree

OUT = BENCH / "serve"
QUESTION = "What is happening right now?"
STREAM_COUNTS = (1, 2, 4, 8)

# The server, in a process of its own so its memory is its own: it touches argv[3] when ready,
# SIGTERM stops it.
SERVER = """
import json, signal, sys, threading
from vinci_edge.serve.server import ServeOptions, Server
server = Server(sys.argv[1], ServeOptions(**json.loads(sys.argv[2]))).start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
open(sys.argv[3], "w").close()  # ready (Triton's own log goes to stdout)
stop.wait()
server.stop(30)
"""


def tiny_checkpoint() -> Path:
    from vinci_edge.model.checkpoint import init_checkpoint

    ckpt = BENCH / "tiny"
    if not (ckpt / "config.json").is_file():
        say("making the tiny checkpoint (random weights, seed 0)")
        init_checkpoint("tiny", ckpt, seed=0, progress=say)
    return ckpt


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`vinci-edge serve` in a child process, and its memory (the process and its children)."""

    def __init__(self, engine: Path, max_streams: int) -> None:
        ports = [free_port() for _ in range(3)]
        options = {
            "http_port": ports[0],
            "grpc_port": ports[1],
            "metrics_port": ports[2],
            "max_streams": max_streams,
            "max_new_tokens": 16,
            "expire_seconds": 30.0,
        }
        self.url = f"127.0.0.1:{ports[1]}"
        self.log = (OUT / "server.log").open("w")
        ready = OUT / "server.ready"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(engine), json.dumps(options), str(ready)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 300
        while not ready.exists() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if not ready.exists():
            self.stop()
            raise SystemExit(f"the server did not start; see {OUT / 'server.log'}")

    def rss_mb(self) -> float:
        """Resident memory of the server process and all its descendants (tritonserver, stubs)."""
        total, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total += next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, StopIteration, ValueError):
                continue
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: tritonserver goes too
                self.proc.wait(10)
        self.log.close()


def server_stats(url: str) -> dict:
    from vinci_edge.serve.client_transport import ServerLink

    link = ServerLink(url, "bench")
    link.connect()
    try:
        return link.stats()
    finally:
        link.close()


def batches(stats: dict, before: dict, name: str = "vision") -> dict:
    now, then = stats.get("batches", {}).get(name, {}), before.get("batches", {}).get(name, {})
    delta = {k: now.get(k, 0) - then.get(k, 0) for k in ("requests", "batches", "items")}
    delta["requests_per_batch"] = delta["requests"] / delta["batches"] if delta["batches"] else 0.0
    delta["largest_batch_so_far"] = now.get("largest_batch", 0)  # the server counts it from its start
    return delta


# ---- streams ---------------------------------------------------------------------------------------------
class Asker:
    """One camera's questions: every `every` seconds (starting at `offset`), until stopped."""

    def __init__(self, session, every: float, offset: float) -> None:
        self.session, self.every, self.offset = session, every, offset
        self.futures: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from vinci_edge.generation import GenerationConfig

        gen = GenerationConfig(max_new_tokens=16)
        wait = self.offset
        while not self.stop.wait(wait):
            self.futures.append(self.session.submit(QUESTION, gen=gen, origin="bench"))
            wait = self.every


def run_streams(server: ServerProcess, media: Path, count: int, seconds: float, every: float) -> dict:
    from vinci_edge.live.sources import FileSource
    from vinci_edge.serve.client import RemoteOptions, RemoteSession

    say(f"{count} stream(s) for {seconds:g} s, a question every {every:g} s each")
    before = server_stats(server.url)
    sessions = [RemoteSession(server.url, f"n{count}-cam{i}", RemoteOptions(fps=1.0)) for i in range(count)]
    askers = [Asker(s, every, every * (1 + i / count)) for i, s in enumerate(sessions)]
    rss: list[float] = []
    start = time.monotonic()
    for session in sessions:
        session.start([FileSource(media, realtime=True, loop=True)])
    for asker in askers:
        asker.thread.start()
    while time.monotonic() - start < seconds:
        rss.append(server.rss_mb())
        time.sleep(1.0)
    for asker in askers:
        asker.stop.set()
    during = server_stats(server.url)  # before `end`: the cameras' own counters
    stoppers = [threading.Thread(target=s.stop, kwargs={"timeout": 60.0}) for s in sessions]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    wall = time.monotonic() - start
    rss.append(server.rss_mb())
    return summarize(count, sessions, askers, before, during, wall, seconds, rss)


def summarize(count, sessions, askers, before, during, wall, seconds, rss) -> dict:
    answers, reasons, unresolved = [], Counter(), 0
    for asker in askers:
        for future in asker.futures:
            if not future.done():
                unresolved += 1
            elif future.exception() is not None:
                reasons[str(future.exception())] += 1
            else:
                answers.append(future.result())
    ttft = np.array([a.ttft_s for a in answers]) if answers else np.zeros(0)
    server_ttft = np.array([a.server.get("ttft_s") or 0.0 for a in answers]) if answers else np.zeros(0)
    cams = during.get("streams", {})
    client = [s.stats() for s in sessions]
    asked = sum(len(a.futures) for a in askers)
    return {
        "streams": count,
        "stream_seconds": seconds,
        "wall_seconds": round(wall, 2),
        "asked": asked,
        "answered": len(answers),
        "refused": sum(reasons.values()),
        "unresolved": unresolved,
        "refusal_reasons": dict(reasons),
        "answers_per_second": len(answers) / seconds,
        "ttft_p50_s": float(np.percentile(ttft, 50)) if ttft.size else None,
        "ttft_p99_s": float(np.percentile(ttft, 99)) if ttft.size else None,
        "server_ttft_p50_s": float(np.percentile(server_ttft, 50)) if server_ttft.size else None,
        "frames_sent": sum(c["frames_sent"] for c in client),
        "frames_dropped_client": sum(c["frames_dropped"] for c in client),
        "frames_dropped_server": sum(
            c.get("frames_dropped", 0) + c.get("packets_dropped", 0) for c in cams.values()
        ),
        "frames_encoded_server": sum(c.get("frames_encoded", 0) for c in cams.values()),
        "segments_server": sum(c.get("segments", 0) for c in cams.values()),
        "vision_batching": batches(during, before),
        "server_rss_mb_max": round(max(rss), 1),
        "server_rss_mb_end": round(rss[-1], 1),
    }


# ---- batching --------------------------------------------------------------------------------------------
def bench_batching(url: str, size: int, frames: int, clients: int) -> dict:
    """The vision model alone: `frames` single-frame requests from one client in turn, then from
    `clients` clients at once."""
    import tritonclient.grpc as grpcclient

    pixels = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)

    def send(n: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("pixel_values", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        for _ in range(n):
            client.infer("vision", [tensor])
        client.close()

    send(8)  # warm
    result = {}
    for label, workers in (("one_at_a_time", 1), (f"{clients}_clients", clients)):
        before = server_stats(url)
        start = time.perf_counter()
        threads = [threading.Thread(target=send, args=(frames // workers,)) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        result[label] = {
            "frames": frames // workers * workers,
            "seconds": round(seconds, 3),
            "frames_per_second": frames // workers * workers / seconds,
            **batches(server_stats(url), before),
        }
    one, many = result["one_at_a_time"], result[f"{clients}_clients"]
    result["gain"] = many["frames_per_second"] / one["frames_per_second"]
    say(
        f"vision: {one['frames_per_second']:.0f} frames/s one at a time, {many['frames_per_second']:.0f} "
        f"with {clients} clients ({many['requests_per_batch']:.1f} requests per batch): {result['gain']:.2f}x"
    )
    return result


# ---- report ----------------------------------------------------------------------------------------------
def write_report(result: dict) -> None:
    (OUT / "report.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Serving benchmark\n\n{result['machine']}; engine {result['engine_name']}; clip {result['clip']}\n"
    ]
    if "streams" in result:
        lines.append(
            "## Cameras at once (files played as live, real time)\n\n"
            "| streams | answers/s | TTFT p50 | TTFT p99 | asked | answered | refused | frames sent "
            "| dropped (client / server) | vision requests per batch | server RSS max |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|"
        )
        for r in result["streams"]:
            p50 = f"{r['ttft_p50_s']:.3f} s" if r["ttft_p50_s"] is not None else "-"
            p99 = f"{r['ttft_p99_s']:.3f} s" if r["ttft_p99_s"] is not None else "-"
            lines.append(
                f"| {r['streams']} | {r['answers_per_second']:.2f} | {p50} | {p99} | {r['asked']} "
                f"| {r['answered']} | {r['refused']} | {r['frames_sent']} "
                f"| {r['frames_dropped_client']} / {r['frames_dropped_server']} "
                f"| {r['vision_batching']['requests_per_batch']:.2f} | {r['server_rss_mb_max']:.0f} MB |"
            )
        reasons = Counter()
        for r in result["streams"]:
            reasons.update(r["refusal_reasons"])
        lines.append("\nRefusals: " + ("; ".join(f"{n} x {k}" for k, n in reasons.items()) or "none"))
    if "batching" in result:
        b = result["batching"]
        lines.append("\n## Vision batching (the vision model alone)\n")
        for k, v in b.items():
            if isinstance(v, dict):
                lines.append(
                    f"- {k}: {v['frames_per_second']:.0f} frames/s, {v['requests_per_batch']:.2f} "
                    f"requests per batch ({v['frames']} single-frame requests)"
                )
        lines.append(f"- gain: {b['gain']:.2f}x")
    (OUT / "report.md").write_text("\n".join(lines) + "\n")
    say(f"wrote {OUT}/report.json, report.md")


def main() -> None:
    from vinci_edge.host import cpu_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="streams,batching")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of stream per stream count")
    ap.add_argument("--every", type=float, default=4.0, help="seconds between one camera's questions")
    ap.add_argument("--counts", default=",".join(map(str, STREAM_COUNTS)))
    args = ap.parse_args()
    print_machine(machine_info(torch_blas=False))
    parts = set(args.parts.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    engine = engine_for(tiny_checkpoint(), "tiny-4k", max_context=4096)
    media = clip()
    counts = [int(n) for n in args.counts.split(",")]
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "engine": str(engine),
        "engine_name": "tiny (tiny towers + tiny LLM, fp32, random weights), ONNX Runtime CPU",
        "clip": str(media),
    }
    say(f"starting the server (engine {engine.name})")
    server = ServerProcess(engine, max(counts))
    try:
        result["server_rss_mb_idle"] = round(server.rss_mb(), 1)
        if "streams" in parts:
            result["streams"] = [run_streams(server, media, n, args.seconds, args.every) for n in counts]
            for r in result["streams"]:
                say(
                    f"{r['streams']} streams: {r['answers_per_second']:.2f} answers/s, "
                    f"TTFT p50 {r['ttft_p50_s']} p99 {r['ttft_p99_s']}, "
                    f"{r['answered']}/{r['asked']} answered, {r['refused']} refused, "
                    f"dropped {r['frames_dropped_client']}/{r['frames_dropped_server']}, "
                    f"RSS {r['server_rss_mb_max']} MB"
                )
        if "batching" in parts:
            size = json.loads((engine / "manifest.json").read_text())["stages"]["vision"]["inputs"][0][
                "shape"
            ][-1]
            result["batching"] = bench_batching(server.url, size, frames=256, clients=8)
    finally:
        server.stop()
    write_report(result)


if __name__ == "__main__":
    main()
