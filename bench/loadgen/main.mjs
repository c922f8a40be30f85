// The Node.js load generator of `caller-engine bench --driver node`.
//
//   node bench/loadgen/main.mjs '{"accountSid": ..., "authToken": ..., "openaiKey": ...}'
//
// One process plays every peer of the server under test on one port: Twilio's REST API,
// the OpenAI Realtime model (ws .../v1/realtime), Chat Completions (/v1/chat/completions)
// and, as load driver, Twilio itself: it places calls the way caller_engine/replay/driver.py
// does and streams the caller audio of each in real time. It prints one JSON line
// {"type": "ready", "port": N}, then reads commands, one JSON object per line, on stdin:
//
//   {"cmd": "level", "out": FILE, ...}  run one level, write its raw measurements to FILE,
//                                       print {"type": "done"}; {"type": "progress"} lines
//                                       come every 250 ms meanwhile
//   {"cmd": "stats"}                    print {"type": "stats", ...counters}
//   {"cmd": "exit"}                     (or end of stdin) exit
//
// Every time is CLOCK_MONOTONIC in seconds (clock.mjs); the Python bench computes every
// figure from the raw measurements with the same code as for its own driver.

import http from 'node:http';
import readline from 'node:readline';
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { acceptUpgrade } from './ws.mjs';
import { forEachMarker, writeMarker, MAX_STREAM } from './markers.mjs';
import { RealtimeModel, chatCompletion } from './model.mjs';
import { RestApi, MediaStream, newSid, sign, post, postForm, parseStreamTwiml } from './twilio.mjs';
import { now } from './clock.mjs';

const FRAME_S = 0.02;
const SETUP_TIMEOUT_MS = 15000;
const options = JSON.parse(process.argv[2] || '{}');
const emit = (message) => process.stdout.write(JSON.stringify(message) + '\n');

const model = new RealtimeModel({
  apiKey: options.openaiKey, chunkMs: options.chunkMs ?? 100, pace: options.pace ?? 2,
  lateDeltas: options.lateDeltas ?? 2,
});
const rest = new RestApi({ accountSid: options.accountSid, authToken: options.authToken });
const counters = { summaries: 0, otherPosts: 0, otherPaths: [] };

// -- the emulators' port --------------------------------------------------------------------

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function onRequest(req, res) {
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', () => {
    const body = Buffer.concat(parts).toString();
    const path = req.url.split('?')[0];
    if (path.startsWith('/2010-04-01/')) {
      const [status, json] = rest.handle(req.method, path, req.headers, body);
      reply(res, status, json);
    } else if (req.method === 'POST' && path === '/v1/chat/completions') {
      if (req.headers.authorization !== `Bearer ${options.openaiKey}`) {
        reply(res, 401, { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } });
        return;
      }
      counters.summaries++;
      reply(res, 200, chatCompletion(JSON.parse(body)));
    } else if (req.method === 'POST') {
      // Anything else the server posts (a result webhook, if one is configured): accepted.
      counters.otherPosts++;
      if (counters.otherPaths.length < 20) counters.otherPaths.push(path);
      reply(res, 200, {});
    } else {
      reply(res, path === '/health' ? 200 : 404, {});
    }
  });
}

const server = http.createServer(onRequest);
server.keepAliveTimeout = 60000;
server.on('upgrade', (req, socket, head) => {
  if (!req.url.split('?')[0].replace(/\/$/, '').endsWith('/realtime')) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
    return;
  }
  const ws = acceptUpgrade(req, socket, head);
  if (ws) model.accept(ws, req);
});

// -- the caller side of every call: one heap of frame due times ----------------------------

class FrameSender {
  constructor(onFrame) {
    this.heap = []; // players by next due time
    this.timer = null;
    this.timerAt = Infinity;
    this.onFrame = onFrame; // (player, at) → false when the player has no more frames
  }

  play(player) {
    return new Promise((resolve) => {
      player.done = resolve;
      this.push(player);
    });
  }

  push(p) {
    const h = this.heap;
    h.push(p);
    for (let i = h.length - 1; i > 0; ) {
      const up = (i - 1) >> 1;
      if (h[up].due <= h[i].due) break;
      [h[up], h[i]] = [h[i], h[up]];
      i = up;
    }
    if (p.due < this.timerAt) this.arm();
  }

  pop() {
    const h = this.heap, top = h[0], last = h.pop();
    if (h.length) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && h[l].due < h[m].due) m = l;
        if (r < h.length && h[r].due < h[m].due) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }

  arm() {
    clearTimeout(this.timer);
    if (!this.heap.length) {
      this.timerAt = Infinity;
      return;
    }
    this.timerAt = this.heap[0].due;
    const wait = Math.max(0, Math.floor((this.timerAt - now()) * 1000));
    this.timer = setTimeout(() => this.tick(), wait);
  }

  // Send every frame due within 1 ms; send times are taken as the frames leave.
  tick() {
    this.timerAt = Infinity;
    const limit = now() + 0.001;
    while (this.heap.length && this.heap[0].due <= limit) {
      const player = this.pop();
      if (this.onFrame(player, now())) this.push(player);
      else player.done();
    }
    this.arm();
  }

  stop() {
    clearTimeout(this.timer);
    for (const p of this.heap) p.done();
    this.heap = [];
  }
}

class Gate {
  constructor(n) {
    this.free = n;
    this.waiting = [];
  }
  acquire() {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  release() {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

// A growable typed array: the measurements of a level stay out of the garbage collector's
// way (no boxed numbers, no per-sample objects).
class Series {
  constructor(Type, capacity = 256, fill = 0) {
    this.Type = Type;
    this.fill = fill;
    this.data = new Type(Math.max(16, capacity)).fill(fill);
    this.length = 0;
  }
  grow(size) {
    if (size <= this.data.length) return;
    const data = new this.Type(Math.max(size, this.data.length * 2)).fill(this.fill);
    data.set(this.data);
    this.data = data;
  }
  push(value) {
    if (this.length === this.data.length) this.grow(this.length + 1);
    this.data[this.length++] = value;
  }
  set(index, value) { // by index, for lookups (unset entries hold `fill`)
    this.grow(index + 1);
    this.data[index] = value;
    if (index >= this.length) this.length = index + 1;
  }
  get(index) {
    return index < this.length ? this.data[index] : this.fill;
  }
  toJSON() {
    return Array.from(this.data.subarray(0, this.length));
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const round6 = (x) => (x === null ? null : Math.round(x * 1e6) / 1e6);
const round3 = (x) => Math.round(x * 1e3) / 1e3;

function withTimeout(ms, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`call set-up took over ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Deterministic phase in [0, 1) for call `index` (calls are not frame-aligned).
function phaseOf(index) {
  let x = (index + 1) * 0x9e3779b1;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  return (x >>> 0) / 2 ** 32;
}

// -- one level ----------------------------------------------------------------------------

async function runLevel(cfg) {
  const t = cfg.target;
  const frames = [];
  const audio = Buffer.from(cfg.audio.frames, 'base64');
  for (let at = 0; at < audio.length; at += 160) frames.push(audio.subarray(at, at + 160));
  const utterances = new Map(cfg.audio.utterances); // last loud frame → first
  const plan = cfg.plan.map((p) => ({ text: p.text, audio: Buffer.from(p.audio, 'base64') }));
  const calls = [];
  const byStream = new Map(); // caller marker stream → call
  const sessions = new Map(); // model marker stream → session
  const clients = new Map(); // call sid → MediaStream
  const background = new Set();
  let framesIn = 0, framesOut = 0;
  rest.reset();
  counters.summaries = counters.otherPosts = 0;

  model.reset(plan, cfg.repeatFrom, {
    newSession(session) {
      const capacity = Math.ceil((cfg.callSeconds ?? 60) * 50); // frames in a call
      session.emittedSeq = new Series(Int32Array, capacity);
      session.emittedResponse = new Series(Int32Array, capacity);
      session.emittedAt = new Series(Float64Array, capacity, NaN);
      session.arrived = new Series(Int32Array, capacity);
      session.seen = new Series(Uint8Array, capacity);
      sessions.set(session.stream, session);
    },
    inputAudio(session, data, at) {
      forEachMarker(data, (stream, seq) => {
        const call = byStream.get(stream);
        if (!call) return;
        if (session.call === null) session.call = call.index;
        call.inSeq.push(seq);
        call.inAt.push(at);
        framesIn++;
      });
    },
    audioDelta(session, chunk, at, responseId) {
      let response = session.responseIds.indexOf(responseId);
      if (response < 0) response = session.responseIds.push(responseId) - 1;
      forEachMarker(chunk, (stream, seq) => {
        session.emittedSeq.push(seq);
        session.emittedResponse.push(response);
        session.emittedAt.set(seq, at);
      });
    },
  });

  const onMedia = (call, at, ulaw) => {
    call.mediaMessages++;
    call.lastMediaAt = at;
    call.firstAudioAt ??= at;
    if (call.pendingTurn !== null) {
      call.turns.push(call.pendingTurn, (at - call.pendingTurn) * 1000);
      call.pendingTurn = null;
    }
    let timed = false;
    forEachMarker(ulaw, (stream, seq) => {
      const session = sessions.get(stream);
      if (!session) return;
      if (session.call === null) session.call = call.index;
      session.arrived.push(seq);
      if (session.seen.get(seq)) return;
      session.seen.set(seq, 1);
      framesOut++;
      const emitted = session.emittedAt.get(seq);
      if (!timed && !Number.isNaN(emitted)) {
        call.outTransit.push(at);
        call.outTransit.push((at - emitted) * 1000);
        timed = true;
      }
    });
  };

  // The caller said frames first..last: a turn when no agent audio came in its second half.
  const speechEnd = (call, started, ended) => {
    const quietFrom = started + (ended - started) / 2;
    if (call.lastMediaAt === null || call.lastMediaAt < quietFrom) call.pendingTurn = ended;
  };

  const scratch = Buffer.alloc(160);
  const sender = new FrameSender((player, at) => {
    const { call, media } = player;
    if (media.closed || media.closing) {
      call.error ??= `stream closed by the server (code ${media.closeCode})`;
      return false;
    }
    const seq = player.index;
    if (seq === 0) player.t0 = at; // a late first frame moves the whole call
    call.sentAt.push(at);
    frames[seq].copy(scratch); // stamped in a scratch frame: sendMedia encodes it at once
    writeMarker(scratch, 0, call.stream, seq);
    media.sendMedia(scratch, at);
    const first = utterances.get(seq);
    if (first !== undefined && first < call.sentAt.length) speechEnd(call, call.sentAt.get(first), at);
    player.index++;
    player.due = player.t0 + player.index * FRAME_S;
    return player.index < frames.length;
  });

  const spawn = (promise) => {
    const p = promise.catch(() => {}).finally(() => background.delete(p));
    background.add(p);
  };

  const twilioParams = (callSid, status) => ({
    CallSid: callSid, AccountSid: t.accountSid, From: t.phoneNumber, To: t.callee,
    CallStatus: status, Direction: 'outbound-api', ApiVersion: '2010-04-01',
  });

  const statusCallback = (url, callSid, status, sequence, extra = {}) => {
    if (!url) return;
    const params = {
      ...twilioParams(callSid, status), SequenceNumber: String(sequence),
      CallbackSource: 'call-progress-events', ...extra,
    };
    spawn(postForm(url, params, { 'X-Twilio-Signature': sign(t.authToken, url, params) }));
  };

  rest.onHangup = (placed) => {
    // The server hung up through the REST API: Twilio ends the media stream.
    const media = clients.get(placed.sid);
    if (media) spawn(media.stop());
  };

  async function setUp(call) {
    let callSid, twimlUrl, statusUrl = null;
    const fallback = `${t.url}/twiml/outbound?callbackId=${encodeURIComponent(call.callbackId)}`;
    if (cfg.initiate) {
      const body = JSON.stringify({ callbackId: call.callbackId, to: t.callee });
      const headers = { 'Content-Type': 'application/json', ...(t.apiKey ? { 'X-API-Key': t.apiKey } : {}) };
      const res = await post(`${t.url}/call/initiate`, body, headers);
      if (res.status !== 200) throw new Error(`/call/initiate answered ${res.status}: ${res.text.slice(0, 200)}`);
      callSid = JSON.parse(res.text).callSid;
      if (typeof callSid !== 'string') throw new Error(`/call/initiate gave no callSid: ${res.text.slice(0, 200)}`);
      const placed = rest.calls.get(callSid);
      twimlUrl = placed?.form.Url || fallback;
      statusUrl = placed?.form.StatusCallback || null;
    } else {
      callSid = newSid('CA'); // answered as if placed elsewhere: the server has no record of it
      twimlUrl = fallback;
    }
    call.callSid = callSid;
    const params = twilioParams(callSid, 'in-progress');
    const res = await postForm(twimlUrl, params, { 'X-Twilio-Signature': sign(t.authToken, twimlUrl, params) });
    if (res.status !== 200) throw new Error(`TwiML fetch answered ${res.status}: ${res.text.slice(0, 200)}`);
    const twiml = parseStreamTwiml(res.text);
    statusCallback(statusUrl, callSid, 'in-progress', 1);
    const media = new MediaStream({
      url: twiml.url, authToken: t.authToken, callSid, accountSid: t.accountSid,
      customParameters: twiml.params,
      hooks: { media: (at, ulaw) => onMedia(call, at, ulaw), clear: (at) => call.clears.push(at) },
    });
    clients.set(callSid, media);
    call.media = media;
    await media.open();
    return statusUrl;
  }

  async function runCall(index, gate) {
    const call = {
      index, stream: index % (MAX_STREAM + 1), callbackId: `replay-${cfg.runId}-${cfg.levelNo}-${index}`,
      callSid: null, startedAt: null, firstAudioAt: null, stoppedAt: null, error: null,
      sentAt: new Series(Float64Array, frames.length), inSeq: new Series(Int32Array, frames.length),
      inAt: new Series(Float64Array, frames.length), outTransit: new Series(Float64Array, 1024),
      clears: [], turns: [],
      mediaMessages: 0, lastMediaAt: null, pendingTurn: null, media: null,
    };
    calls.push(call);
    byStream.set(call.stream, call);
    let statusUrl = null;
    try {
      statusUrl = await withTimeout(SETUP_TIMEOUT_MS, setUp(call));
      call.startedAt = call.media.startedAt;
      const delay = phaseOf(index) * FRAME_S;
      await sender.play({ call, media: call.media, index: 0, t0: now() + delay, due: now() + delay });
      call.stoppedAt = now();
    } catch (exc) {
      call.error ??= `${exc.name}: ${exc.message}`;
    } finally {
      call.stoppedAt ??= now();
      const media = call.media;
      if (media) {
        try {
          await media.stop();
        } catch {}
        clients.delete(media.callSid);
        const duration = String(Math.round(call.stoppedAt - (call.startedAt ?? call.stoppedAt)));
        statusCallback(statusUrl, media.callSid, 'completed', 2, { CallDuration: duration });
      }
      gate.release();
    }
  }

  // The driver's own event-loop lag: how late a 10 ms timer fires (as replay/lag.py).
  const lagMs = [];
  let lagTimer = null;
  const lagTick = (due) => {
    lagTimer = setTimeout(() => {
      const at = now();
      lagMs.push(Math.max(0, (at - due) * 1000));
      lagTick(at + 0.01);
    }, 10);
  };
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  lagTick(now() + 0.01);

  const began = now();
  const tasks = [];
  const progress = setInterval(() => {
    const done = calls.filter((c) => c.stoppedAt !== null).length;
    emit({
      type: 'progress', done, total: cfg.total, active: tasks.length - done,
      failed: calls.filter((c) => c.error).length, framesIn, framesOut, elapsed: now() - began,
    });
  }, 250);
  const gate = new Gate(cfg.concurrency);
  for (let index = 0; index < cfg.total; index++) {
    await sleep((began + index / cfg.rampPerS - now()) * 1000);
    await gate.acquire();
    tasks.push(runCall(index, gate));
  }
  await Promise.all(tasks);
  sender.stop();
  clearInterval(progress);
  clearTimeout(lagTimer);
  delay.disable();
  await Promise.race([Promise.allSettled([...background]), sleep(10000)]);
  const ended = now();

  // The histogram holds the spans between 10 ms ticks: less the 10 ms, the delay.
  const ms = (ns) => round3(Math.max(0, ns / 1e6 - 10));
  const result = {
    began, ended,
    calls: calls.map((c) => ({
      index: c.index, stream: c.stream, callbackId: c.callbackId, callSid: c.callSid,
      startedAt: c.startedAt, firstAudioAt: c.firstAudioAt, stoppedAt: c.stoppedAt, error: c.error,
      sentAt: c.sentAt.toJSON().map(round6), inSeq: c.inSeq, inAt: c.inAt.toJSON().map(round6),
      outTransit: c.outTransit.toJSON().map(round6), clears: c.clears, turns: c.turns.map(round6),
      mediaMessages: c.mediaMessages,
    })),
    sessions: model.sessions.map((s) => ({
      stream: s.stream, call: s.call, speechStarted: s.speechStarted,
      emitted: s.emittedSeq.toJSON().flatMap((seq, i) => [
        seq, round6(s.emittedAt.get(seq)), s.responseIds[s.emittedResponse.get(i)],
      ]),
      arrived: s.arrived, cancelled: s.cancelled,
    })),
    lagMs: lagMs.map(round3),
    eventLoopDelayMs: { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) },
    rest: { ...rest.counts },
    summaries: counters.summaries,
    otherPosts: counters.otherPosts,
    violations: model.violations.slice(0, 20),
  };
  writeFileSync(cfg.out, JSON.stringify(result));
}

// -- control --------------------------------------------------------------------------------

async function command(line) {
  const cmd = JSON.parse(line);
  if (cmd.cmd === 'level') {
    try {
      await runLevel(cmd);
      emit({ type: 'done' });
    } catch (exc) {
      emit({ type: 'failed', error: String(exc && exc.stack ? exc.stack : exc) });
    }
  } else if (cmd.cmd === 'stats') {
    emit({ type: 'stats', ...counters, rest: rest.counts, violations: model.violations.slice(0, 20) });
  } else if (cmd.cmd === 'exit') {
    process.exit(0);
  }
}

server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
  emit({ type: 'ready', port: server.address().port, pid: process.pid });
  const lines = readline.createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    if (line.trim()) queue = queue.then(() => command(line));
  });
  lines.on('close', () => queue.then(() => process.exit(0)));
});
