// The vinci-edge live console: the live view, questions and their streamed answers, alerts, source
// notices, counters and a per-stage latency chart, all from the console's own server:
//   /events     Server-Sent Events (the session's events, the recent ones replayed first)
//   /frame.jpg  the newest sampled frame (204 before the first); X-Frame-Time is its stream time
//   /ask        POST {"question"} -> {"qid"}      /stats  the session's counters
// Text from the session is only ever set as textContent (never parsed as HTML).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const FRAME_EVERY_MS = 500;
  const STATS_EVERY_MS = 1000;
  const CHART_EVENTS = 60; // segments and answers the chart shows
  const LOG_LIMIT = 100; // entries kept in the alert and source logs
  const ANSWER_LIMIT = 50; // answers kept on the page
  const SERIES = [
    { key: "vision", label: "vision", color: "#4e79a7" },
    { key: "audio", label: "audio", color: "#f28e2b" },
    { key: "stitch", label: "stitch", color: "#59a14f" },
    { key: "append", label: "append (prefill)", color: "#b07aa1" },
    { key: "ttft_s", label: "answer: time to first token", color: "#e15759", answer: true },
  ];
  const COUNTERS = [
    ["frames_encoded", "frames encoded"],
    ["frames_dropped", "frames dropped"],
    ["audio_blocks_dropped", "audio blocks dropped"],
    ["window_positions", "window positions"],
    ["window_limit", "window limit"],
    ["media_until", "media in the cache up to"],
    ["window_from", "window starts at"],
    ["queued_frames", "frames queued"],
    ["queued_audio_seconds", "audio queued (s)"],
    ["queued_questions", "questions waiting"],
    ["frames_seen", "frames seen"],
    ["frames_sampled", "frames sampled"],
    ["frames_static", "static frames skipped"],
    ["segments", "segments"],
    ["evictions", "evictions"],
    ["questions", "questions"],
    ["answers", "answers"],
    ["refused", "refused"],
    ["events_missed", "events this page missed"],
  ];

  const TIME_COUNTERS = new Set(["media_until", "window_from"]);

  const state = {
    answers: new Map(), // qid -> {card, text, streamed}
    points: [], // {t, values: {key: seconds}}
    counters: { events_missed: 0 },
  };

  // ---- events --------------------------------------------------------------------------------------
  const handlers = {
    segment: onSegment,
    question: (ev) => answerCard(ev.qid, ev.question, ev.origin, ev.t),
    text: onText,
    answer: onAnswer,
    refused: onRefused,
    source: (ev) => notice(ev.t, ev.kind, `${ev.source}: ${ev.message}`),
    dropped: (ev) => setCounters({ frames_dropped: ev.frames, audio_blocks_dropped: ev.audio_blocks }),
    evict: (ev) =>
      notice(ev.t, "evict", `window full: the oldest ${fmtS(ev.seconds)} of media left the cache ` +
        `(${ev.dropped_positions} positions dropped, ${ev.kept_positions} kept)`),
    alert: onAlert,
    error: (ev) => notice(ev.t, "error", ev.message),
    speech: (ev) => notice(ev.t, "speech", `speech from ${fmtT(ev.t0)} to ${fmtT(ev.t1)}`),
    lagging: (ev) => {
      setCounters({ events_missed: ev.total_lost });
      notice(null, "lagging", `this page read too slowly and missed ${ev.lost} events`);
    },
  };

  function connect() {
    const badge = $("connection");
    const source = new EventSource("/events");
    source.onopen = () => setBadge(badge, "live", "ok");
    source.onerror = () => setBadge(badge, "reconnecting…", "bad");
    source.onmessage = (message) => {
      const ev = JSON.parse(message.data);
      const handler = handlers[ev.type];
      if (handler) handler(ev);
    };
  }

  function setBadge(badge, text, kind) {
    badge.textContent = text;
    badge.dataset.state = kind;
  }

  // ---- answers -------------------------------------------------------------------------------------
  function answerCard(qid, question, origin, t) {
    let entry = state.answers.get(qid);
    if (!entry) {
      const card = el("article", "answer");
      card.id = `answer-${qid}`;
      card.dataset.qid = qid;
      card.dataset.state = "waiting";
      const heading = el("h4", "question", question || "(question not in the replay)");
      const meta = el("p", "meta", `#${qid}`);
      const text = el("p", "text");
      const status = el("p", "status", "waiting for its turn…");
      card.append(heading, meta, text, status);
      $("answers").prepend(card);
      entry = { card, heading, meta, text, status, streamed: "" };
      state.answers.set(qid, entry);
      trimAnswers();
    }
    if (origin) entry.origin = origin;
    if (isNum(t)) entry.askedAt = t;
    entry.meta.textContent = [`#${qid}`, entry.origin, isNum(entry.askedAt) && `asked at ${fmtT(entry.askedAt)}`]
      .filter(Boolean).join(" · ");
    return entry;
  }

  function onText(ev) {
    const entry = answerCard(ev.qid);
    entry.streamed += ev.text;
    entry.text.textContent = entry.streamed;
    entry.card.dataset.state = "streaming";
    entry.status.textContent = "generating…";
  }

  function onAnswer(ev) {
    const entry = answerCard(ev.qid, ev.question, ev.origin);
    entry.heading.textContent = ev.question;
    // The streamed pieces should add up to the answer; if some were missed, the answer wins.
    entry.card.dataset.match = String(entry.streamed === ev.text);
    entry.text.textContent = ev.text;
    entry.card.dataset.state = "done";
    entry.status.textContent =
      `first token ${fmtS(ev.ttft_s)} · total ${fmtS(ev.total_s)} · ${ev.tokens} tokens · ` +
      `media up to ${fmtT(ev.media_until)}`;
    addPoint(ev.t, { ttft_s: ev.ttft_s });
  }

  function onRefused(ev) {
    const entry = answerCard(ev.qid, ev.question);
    entry.card.dataset.state = "refused";
    entry.status.textContent = `refused: ${ev.reason}`;
  }

  function trimAnswers() {
    const cards = $("answers").children;
    while (cards.length > ANSWER_LIMIT) {
      const last = cards[cards.length - 1];
      state.answers.delete(Number(last.dataset.qid));
      last.remove();
    }
  }

  // ---- asking --------------------------------------------------------------------------------------
  async function ask(event) {
    event.preventDefault();
    const box = $("question");
    const button = $("ask");
    const error = $("ask-error");
    const question = box.value.trim();
    error.textContent = "";
    if (!question) {
      error.textContent = "Type a question first.";
      return;
    }
    button.disabled = true;
    try {
      const response = await fetch("/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question }),
      });
      const reply = await response.json();
      if (!response.ok) {
        error.textContent = reply.error || `the console answered ${response.status}`;
        return;
      }
      box.value = "";
      if (reply.qid != null) answerCard(reply.qid, question, "web");
    } catch (err) {
      error.textContent = `could not reach the console (${err.message})`;
    } finally {
      button.disabled = false;
    }
  }

  function askOnEnter(event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  }

  // ---- alerts and notices --------------------------------------------------------------------------
  function onAlert(ev) {
    const { type, t, ...rest } = ev;
    const text = ev.message || ev.text || Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(" ");
    logLine($("alerts"), t, ev.level || ev.kind || "alert", text);
  }

  function notice(t, kind, text) {
    logLine($("sources"), t, kind, text);
  }

  function logLine(list, t, kind, text) {
    const item = el("li");
    item.dataset.kind = kind;
    item.append(el("span", "time", fmtT(t)), el("span", `tag tag-${kind}`, kind), el("span", "msg", text));
    list.prepend(item);
    while (list.children.length > LOG_LIMIT) list.lastElementChild.remove();
  }

  // ---- counters ------------------------------------------------------------------------------------
  function onSegment(ev) {
    setCounters({ window_positions: ev.window_positions });
    addPoint(ev.t1 ?? ev.t, ev.timings || {});
  }

  function setCounters(values) {
    for (const [key, value] of Object.entries(values)) if (value != null) state.counters[key] = value;
    renderCounters();
  }

  function renderCounters() {
    const list = $("counters");
    const known = new Set(COUNTERS.map(([key]) => key));
    const rows = COUNTERS.filter(([key]) => key in state.counters);
    for (const key of Object.keys(state.counters)) if (!known.has(key)) rows.push([key, key.replaceAll("_", " ")]);
    list.replaceChildren(
      ...rows.map(([key, label]) => {
        const row = el("div");
        const value = el("dd", "", formatCounter(key, state.counters[key]));
        value.dataset.key = key;
        row.append(el("dt", "", label), value);
        return row;
      }),
    );
  }

  function formatCounter(key, value) {
    if (TIME_COUNTERS.has(key)) return fmtT(value);
    return isNum(value) && !Number.isInteger(value) ? value.toFixed(2) : String(value);
  }

  async function pollStats() {
    try {
      const response = await fetch("/stats", { cache: "no-store" });
      if (response.ok) {
        const { web, ...stats } = await response.json();
        const flat = {};
        for (const [key, value] of Object.entries(stats)) if (typeof value !== "object") flat[key] = value;
        setCounters(flat);
      }
    } catch (err) {
      // the console is away; the event stream's badge says so
    }
    setTimeout(pollStats, STATS_EVERY_MS);
  }

  // ---- live view -----------------------------------------------------------------------------------
  let frameTime = null;
  let frameUrl = null;

  async function refreshFrame() {
    try {
      const response = await fetch("/frame.jpg", { cache: "no-store" });
      const t = response.headers.get("X-Frame-Time");
      if (response.status === 200 && t !== frameTime) {
        const url = URL.createObjectURL(await response.blob());
        const img = $("frame");
        img.onload = () => {
          if (frameUrl) URL.revokeObjectURL(frameUrl);
          frameUrl = url;
        };
        img.src = url;
        img.hidden = false;
        $("frame-wait").hidden = true;
        frameTime = t;
        $("frame-time").textContent = fmtT(Number(t));
      }
    } catch (err) {
      // try again on the next tick
    }
    setTimeout(refreshFrame, FRAME_EVERY_MS);
  }

  // ---- latency chart -------------------------------------------------------------------------------
  let chartQueued = false;

  function addPoint(t, values) {
    state.points.push({ t, values });
    if (state.points.length > CHART_EVENTS) state.points.shift();
    if (!chartQueued) {
      chartQueued = true;
      requestAnimationFrame(() => {
        chartQueued = false;
        drawChart();
      });
    }
  }

  function drawChart() {
    const canvas = $("chart");
    const { ctx, width, height } = sizeCanvas(canvas);
    const pad = { left: 48, right: 10, top: 10, bottom: 28 };
    const plot = { x: pad.left, y: pad.top, w: width - pad.left - pad.right, h: height - pad.top - pad.bottom };
    const points = state.points.filter((p) => p.t != null);
    const times = points.map((p) => p.t);
    const values = points.flatMap((p) => SERIES.map((s) => p.values[s.key]).filter(isNum));
    const t0 = times.length ? Math.min(...times) : 0;
    const t1 = Math.max(...times, t0 + 1);
    const yTicks = niceTicks(Math.max(...values, 0.001));
    const yTop = yTicks[yTicks.length - 1];
    const X = (t) => plot.x + ((t - t0) / (t1 - t0)) * plot.w;
    const Y = (v) => plot.y + plot.h - (v / yTop) * plot.h;

    ctx.clearRect(0, 0, width, height);
    drawAxes(ctx, plot, yTicks, Y, [t0, t1], X);
    let drawn = 0;
    for (const series of SERIES) {
      const pts = points.filter((p) => isNum(p.values[series.key])).map((p) => [X(p.t), Y(p.values[series.key])]);
      ctx.strokeStyle = ctx.fillStyle = series.color;
      if (!series.answer && pts.length > 1) {
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        ctx.stroke();
      }
      for (const [x, y] of pts) (series.answer ? diamond : dot)(ctx, x, y);
      drawn += pts.length;
    }
    canvas.dataset.points = String(drawn);
    canvas.setAttribute("aria-label", chartSummary(points));
    $("latency-summary").textContent = chartSummary(points);
  }

  function sizeCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 640;
    const height = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return { ctx, width, height };
  }

  function drawAxes(ctx, plot, yTicks, Y, [t0, t1], X) {
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of yTicks) {
      ctx.strokeStyle = "#ddd";
      ctx.beginPath();
      ctx.moveTo(plot.x, Y(v));
      ctx.lineTo(plot.x + plot.w, Y(v));
      ctx.stroke();
      ctx.fillStyle = "#333";
      ctx.fillText(fmtS(v), plot.x - 4, Y(v));
    }
    ctx.textBaseline = "top";
    [t0, (t0 + t1) / 2, t1].forEach((t, i) => {
      ctx.textAlign = ["left", "center", "right"][i];
      ctx.fillText(fmtT(t), X(t), plot.y + plot.h + 6);
    });
    ctx.strokeStyle = "#444";
    ctx.strokeRect(plot.x, plot.y, plot.w, plot.h);
  }

  function chartSummary(points) {
    const last = (key) => [...points].reverse().find((p) => isNum(p.values[key]));
    const parts = SERIES.map((s) => [s, last(s.key)]).filter(([, p]) => p)
      .map(([s, p]) => `${s.label} ${fmtS(p.values[s.key])}`);
    return parts.length ? `Latest latencies: ${parts.join(", ")}.` : "Latency chart: no segments yet";
  }

  function renderLegend() {
    $("legend").replaceChildren(
      ...SERIES.map((s) => {
        const item = el("li");
        const swatch = el("span", s.answer ? "swatch diamond" : "swatch");
        swatch.style.setProperty("--color", s.color);
        item.append(swatch, el("span", "", s.label));
        return item;
      }),
    );
  }

  function dot(ctx, x, y) {
    ctx.beginPath();
    ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }

  function diamond(ctx, x, y) {
    ctx.beginPath();
    ctx.moveTo(x, y - 5);
    ctx.lineTo(x + 5, y);
    ctx.lineTo(x, y + 5);
    ctx.lineTo(x - 5, y);
    ctx.closePath();
    ctx.fill();
  }

  function niceTicks(top, count = 4) {
    const raw = top / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((s) => s * mag).find((s) => s >= raw);
    const n = Math.ceil(top / step - 1e-9);
    return Array.from({ length: n + 1 }, (_, i) => i * step);
  }

  // ---- small helpers -------------------------------------------------------------------------------
  function el(tag, className = "", text = "") {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmtT = (t) => (isNum(t) ? `${t.toFixed(1)} s` : "–");
  function fmtS(s) {
    if (!isNum(s)) return "–";
    if (s >= 1) return `${s.toFixed(2)} s`;
    return s >= 0.01 || s === 0 ? `${Math.round(s * 1000)} ms` : `${(s * 1000).toFixed(1)} ms`;
  }

  // ---- start ---------------------------------------------------------------------------------------
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", askOnEnter);
  window.addEventListener("resize", () => drawChart());
  renderLegend();
  renderCounters();
  drawChart();
  connect();
  refreshFrame();
  pollStats();
})();
