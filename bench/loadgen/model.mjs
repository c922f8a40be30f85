// The OpenAI Realtime (GA) model and the Chat Completions endpoint, as the server under test
// sees them. Follows caller_engine/sim/openai/realtime (session.py, turns.py, vad.py,
// responses.py) for the events a μ-law session with server VAD produces, in the same order
// and shapes: session.created / session.updated, VAD turns (speech_started, speech_stopped,
// committed, item added/done, transcription), responses streamed in 100 ms audio deltas at
// `pace` times real time with a marker on every 20 ms frame, cancellation (response.cancel,
// barge-in), truncation, and `conversation_already_has_active_response` refusals.
//
// Measurement hooks: `hooks.newSession(session)`, `hooks.inputAudio(session, data, at)` and
// `hooks.audioDelta(session, chunk, at, responseId)`, with the monotonic time of the event;
// each session keeps its speech_started times and cancelled responses itself.

import { randomBytes } from 'node:crypto';
import { stampFrames, countFrames, MAX_STREAM } from './markers.mjs';
import { now } from './clock.mjs';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const FRAME_MS = 20;
const MIN_SPEECH_MS = 40;

// Ids shaped like the server's: prefix + "_" + 21 characters (a random run prefix + a counter).
const RUN = Array.from(randomBytes(9), (b) => ALPHABET[b % 62]).join('');
let idCounter = 0;
export function newId(prefix) {
  let n = ++idCounter, tail = '';
  for (let i = 0; i < 12; i++, n = Math.floor(n / 62)) tail = ALPHABET[n % 62] + tail;
  return `${prefix}_${RUN}${tail}`;
}

// |amplitude| of each μ-law code (G.711 decode, as caller_engine/audio/mulaw.py).
const ABS = new Uint16Array(256);
for (let code = 0; code < 256; code++) {
  const c = ~code & 0xff;
  ABS[code] = ((((c & 0x0f) << 3) + 0x84) << ((c >> 4) & 7)) - 0x84;
}
function frameEnergy(buf, start, end) {
  let sum = 0;
  for (let i = start; i < end; i++) sum += ABS[buf[i]];
  return sum / (end - start);
}

const DEFAULT_INSTRUCTIONS =
  "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. " +
  "Act like a human, but remember that you aren't a human.";

function defaultTurnDetection() {
  return {
    type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 200,
    idle_timeout_ms: null, create_response: true, interrupt_response: true,
  };
}

function defaultSession(model) {
  return {
    type: 'realtime', object: 'realtime.session', id: newId('sess'), model,
    output_modalities: ['audio'], instructions: DEFAULT_INSTRUCTIONS, tools: [],
    tool_choice: 'auto', max_output_tokens: 'inf', tracing: null, truncation: 'auto',
    prompt: null, expires_at: Math.floor(Date.now() / 1000) + 3600, include: null,
    audio: {
      input: {
        format: { type: 'audio/pcm', rate: 24000 }, transcription: null, noise_reduction: null,
        turn_detection: defaultTurnDetection(),
      },
      output: { format: { type: 'audio/pcm', rate: 24000 }, voice: 'alloy', speed: 1.0 },
    },
  };
}

// session.update: present fields replace; audio.input / audio.output merge key by key.
function mergeSession(current, update) {
  const merged = structuredClone(current);
  for (const [key, value] of Object.entries(update)) {
    if (key !== 'audio' || typeof value !== 'object' || value === null) {
      merged[key] = structuredClone(value);
      continue;
    }
    for (const side of ['input', 'output']) {
      if (typeof value[side] !== 'object' || value[side] === null) continue;
      const target = merged.audio[side];
      for (const [sub, subValue] of Object.entries(value[side])) {
        if (sub === 'turn_detection' && subValue && typeof subValue === 'object') {
          const base = target.turn_detection?.type === (subValue.type ?? 'server_vad')
            ? target.turn_detection : defaultTurnDetection();
          target.turn_detection = { ...base, ...subValue };
        } else {
          target[sub] = structuredClone(subValue);
        }
      }
    }
  }
  return merged;
}

function error(code, message, eventId, param = null) {
  return { type: 'error', error: { type: 'invalid_request_error', code, message, param, event_id: eventId } };
}

function responseObject(session, run, status, extra = {}) {
  const out = session.session.audio.output;
  return {
    object: 'realtime.response', id: run.id, status, status_details: extra.status_details ?? null,
    output: run.output, conversation_id: session.conversationId,
    output_modalities: ['audio'], max_output_tokens: session.session.max_output_tokens ?? 'inf',
    audio: { output: { format: out.format, voice: out.voice } }, usage: extra.usage ?? null,
    metadata: run.params.metadata ?? null,
  };
}

function usage(session, run, audioBytes) {
  const inputText = Math.floor((session.session.instructions || '').length / 4) + 1;
  const inputAudio = Math.floor(session.inputBytes / 800);
  const outText = run.transcriptSent.split(/\s+/).filter(Boolean).length;
  const outAudio = Math.floor(audioBytes / 400);
  return {
    total_tokens: inputText + inputAudio + outText + outAudio,
    input_tokens: inputText + inputAudio, output_tokens: outText + outAudio,
    input_token_details: {
      text_tokens: inputText, audio_tokens: inputAudio, image_tokens: 0, cached_tokens: 0,
      cached_tokens_details: { text_tokens: 0, audio_tokens: 0, image_tokens: 0 },
    },
    output_token_details: { text_tokens: outText, audio_tokens: outAudio },
  };
}

const RATE_LIMITS = {
  rate_limits: [
    { name: 'requests', limit: 20000, remaining: 19999, reset_seconds: 0.003 },
    { name: 'tokens', limit: 15000000, remaining: 14995000, reset_seconds: 0.02 },
  ],
};

// The emulator: one `Session` per accepted WebSocket. `plan` is the list of responses
// ({text, audio: Buffer}) served in order, repeating from `repeatFrom`.
export class RealtimeModel {
  constructor({ apiKey, chunkMs = 100, pace = 2, lateDeltas = 2, vadThreshold = 400 }) {
    this.apiKey = apiKey;
    this.chunkMs = chunkMs;
    this.interval = pace > 0 ? chunkMs / pace : 0;
    this.lateDeltas = lateDeltas;
    this.vadThreshold = vadThreshold;
    this.plan = [];
    this.repeatFrom = 0;
    this.hooks = {};
    this.sessions = [];
    this.violations = [];
    this._streams = 0;
  }

  reset(plan, repeatFrom, hooks) {
    this.plan = plan;
    this.repeatFrom = repeatFrom;
    this.hooks = hooks;
    this.sessions = [];
    this.violations = [];
    this._streams = 0;
  }

  // A new connection (`ws`: WsConn) for request `req`.
  accept(ws, req) {
    const url = new URL(req.url, 'http://x');
    const session = new Session(this, ws, url.searchParams.get('model') || '', this._streams++ % (MAX_STREAM + 1));
    this.sessions.push(session);
    this.hooks.newSession?.(session);
    const auth = req.headers.authorization || '';
    if ('openai-beta' in req.headers) {
      session.refuse('beta_api_shape_disabled', 'The beta API shape is no longer supported.', 4000);
    } else if (!session.model) {
      session.refuse('missing_model', 'You must provide a model parameter.', 4000);
    } else if (auth !== `Bearer ${this.apiKey}`) {
      session.refuse('invalid_api_key', 'Incorrect API key provided.', 3000);
    } else {
      session.start();
    }
    return session;
  }
}

class Session {
  constructor(model, ws, modelName, stream) {
    this.emulator = model;
    this.ws = ws;
    this.model = modelName;
    this.stream = stream; // marker stream of this session's output audio
    this.session = defaultSession(modelName);
    this.conversationId = newId('conv');
    this.items = new Map(); // item id → {role, audioBytes}
    this.order = [];
    this.active = null; // the response in the conversation, while it runs
    this.served = 0;
    this.nextSeq = 0;
    this.inputBytes = 0;
    this.speechItem = null;
    // VAD state (vad.py), positions in ms of audio received
    this.pending = Buffer.alloc(0);
    this.position = 0;
    this.bufferStart = 0;
    this.speaking = false;
    this.loudMs = 0;
    this.loudStart = 0;
    this.quietMs = 0;
    // measurements
    this.call = null; // index of the call whose caller audio arrives here
    this.speechStarted = [];
    this.cancelled = []; // [responseId, at]
    // Filled by the load driver: what was emitted when, what reached the caller.
    this.emittedSeq = this.emittedResponse = this.emittedAt = this.arrived = this.seen = null;
    this.responseIds = [];
    this.closed = false;
    ws.onClose = () => {
      this.closed = true;
      if (this.active) this.active.cancelReason ??= 'closed';
    };
  }

  refuse(code, message, closeCode) {
    this.emulator.violations.push(`handshake: ${code}`);
    this.emit({ type: 'error', error: { type: 'invalid_request_error', code, message, param: null, event_id: null } });
    this.ws.close(closeCode);
  }

  start() {
    this.emit({ type: 'session.created', session: this.session });
    this.ws.onText = (text) => this.onText(text);
  }

  // Send one event with a fresh event_id (placed second, as the emulator does); returns the
  // time it went out.
  emit(event) {
    const { type, ...rest } = event;
    const at = now();
    this.ws.sendText(JSON.stringify({ type, event_id: newId('event'), ...rest }));
    return at;
  }

  onText(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      this.emit(error('invalid_json', 'Invalid event: failed to parse JSON value.', null));
      return;
    }
    const eventId = typeof event.event_id === 'string' ? event.event_id : null;
    const refusal = this.handle(event);
    if (refusal) {
      this.emulator.violations.push(`${event.type}: ${refusal.message}`);
      this.emit(error(refusal.code, refusal.message, eventId, refusal.param ?? null));
    }
  }

  // One client event; a refusal ({code, message}) or nothing.
  handle(event) {
    switch (event.type) {
      case 'input_audio_buffer.append':
        return this.append(Buffer.from(event.audio, 'base64'));
      case 'session.update':
        this.session = mergeSession(this.session, event.session || {});
        this.emit({ type: 'session.updated', session: this.session });
        return null;
      case 'response.create': {
        const params = event.response || {};
        if ((params.conversation ?? 'auto') !== 'none' && this.active) {
          return {
            code: 'conversation_already_has_active_response',
            message: `Conversation already has an active response in progress: ${this.active.id}. ` +
              'Wait until the response is finished before creating a new one.',
          };
        }
        this.startResponse(params);
        return null;
      }
      case 'response.cancel': {
        const run = this.active && (!event.response_id || event.response_id === this.active.id) ? this.active : null;
        if (!run || run.cancelReason) {
          return { code: 'response_cancel_not_active', message: 'Cancellation failed: no active response found' };
        }
        run.cancelReason = 'client_cancelled';
        run.wake();
        return null;
      }
      case 'conversation.item.truncate': {
        const item = this.items.get(event.item_id);
        if (!item) return { code: 'item_not_found', message: `Item with item_id '${event.item_id}' not found.`, param: 'item_id' };
        if (item.role !== 'assistant' || item.audioBytes === 0) {
          return { code: 'unsupported_content_type', message: 'Only model output audio messages can be truncated' };
        }
        const audioMs = Math.floor(item.audioBytes / 8);
        if (event.audio_end_ms > audioMs) {
          return {
            code: 'invalid_value', param: 'audio_end_ms',
            message: `Audio content of ${audioMs}ms is already shorter than ${event.audio_end_ms}ms`,
          };
        }
        this.emit({ type: 'conversation.item.truncated', item_id: event.item_id, content_index: 0, audio_end_ms: event.audio_end_ms });
        return null;
      }
      case 'conversation.item.create': {
        const item = { ...event.item, id: event.item?.id || newId('item'), object: 'realtime.item' };
        item.status ??= 'completed';
        this.items.set(item.id, { role: item.role, audioBytes: 0 });
        const previous = this.order.at(-1) ?? null;
        this.order.push(item.id);
        this.emit({ type: 'conversation.item.added', previous_item_id: previous, item });
        this.emit({ type: 'conversation.item.done', previous_item_id: previous, item });
        return null;
      }
      case 'input_audio_buffer.clear':
        this.speaking = false;
        this.loudMs = this.quietMs = 0;
        this.pending = Buffer.alloc(0);
        this.bufferStart = this.position;
        this.emit({ type: 'input_audio_buffer.cleared' });
        return null;
      case 'input_audio_buffer.commit':
        this.speaking = false;
        this.commit(this.speechItem || newId('item'), false);
        this.speechItem = null;
        return null;
      default:
        return { code: 'invalid_value', message: `Invalid value: '${event.type}'. This event is not supported here.`, param: 'type' };
    }
  }

  // -- caller audio and server VAD (turns.py, vad.py) ------------------------------------

  append(data) {
    const at = now();
    this.inputBytes += data.length;
    this.emulator.hooks.inputAudio?.(this, data, at);
    const detection = this.session.audio.input.turn_detection;
    if (!detection) {
      this.position += Math.floor(data.length / 8);
      return null;
    }
    const threshold = this.emulator.vadThreshold * (Number(detection.threshold ?? 0.5) / 0.5 || 1);
    const silenceMs = detection.silence_duration_ms || 500; // as vad.py: 0 and null mean default
    const prefixMs = detection.prefix_padding_ms || 300;
    let buf = this.pending.length ? Buffer.concat([this.pending, data]) : data;
    let at160 = 0;
    for (; at160 + 160 <= buf.length; at160 += 160) {
      const loud = frameEnergy(buf, at160, at160 + 160) > threshold;
      const start = this.position;
      this.position += FRAME_MS;
      if (!this.speaking) {
        if (!loud) {
          this.loudMs = 0;
          continue;
        }
        if (this.loudMs === 0) this.loudStart = start;
        this.loudMs += FRAME_MS;
        if (this.loudMs < MIN_SPEECH_MS) continue;
        this.speaking = true;
        this.quietMs = 0;
        this.onSpeechStarted(Math.max(this.bufferStart, this.loudStart - prefixMs), detection);
      } else if (loud) {
        this.quietMs = 0;
      } else {
        this.quietMs += FRAME_MS;
        if (this.quietMs < silenceMs) continue;
        this.speaking = false;
        this.loudMs = 0;
        this.onSpeechStopped(this.position, detection);
      }
    }
    this.pending = at160 < buf.length ? Buffer.from(buf.subarray(at160)) : Buffer.alloc(0);
    return null;
  }

  onSpeechStarted(audioStartMs, detection) {
    this.speechItem = newId('item');
    const run = this.active;
    const interrupt = run && detection.interrupt_response !== false;
    if (interrupt) run.cancelReason ??= 'turn_detected'; // no delta follows speech_started
    const at = this.emit({ type: 'input_audio_buffer.speech_started', audio_start_ms: audioStartMs, item_id: this.speechItem });
    this.speechStarted.push(at);
    if (interrupt) run.wake();
  }

  onSpeechStopped(audioEndMs, detection) {
    const itemId = this.speechItem || newId('item');
    this.speechItem = null;
    this.emit({ type: 'input_audio_buffer.speech_stopped', audio_end_ms: audioEndMs, item_id: itemId });
    this.commit(itemId, detection.create_response !== false);
  }

  commit(itemId, respond) {
    const previous = this.order.at(-1) ?? null;
    this.order.push(itemId);
    this.emit({ type: 'input_audio_buffer.committed', previous_item_id: previous, item_id: itemId });
    const item = {
      id: itemId, object: 'realtime.item', type: 'message', status: 'completed', role: 'user',
      content: [{ type: 'input_audio', transcript: null }],
    };
    this.items.set(itemId, { role: 'user', audioBytes: 0 });
    this.emit({ type: 'conversation.item.added', previous_item_id: previous, item });
    this.emit({ type: 'conversation.item.done', previous_item_id: previous, item });
    this.bufferStart = this.position;
    if (this.session.audio.input.transcription) {
      const ids = { item_id: itemId, content_index: 0 };
      this.emit({ type: 'conversation.item.input_audio_transcription.delta', ...ids, delta: '' });
      const tokens = Math.max(1, Math.floor(this.inputBytes / 800));
      this.emit({
        type: 'conversation.item.input_audio_transcription.completed', ...ids, transcript: '',
        usage: { type: 'tokens', total_tokens: tokens, input_tokens: tokens, input_token_details: { text_tokens: 0, audio_tokens: tokens }, output_tokens: 0 },
      });
    }
    if (respond && !this.active) this.startResponse({});
  }

  // -- responses (responses.py) ----------------------------------------------------------

  nextPlanned() {
    const plan = this.emulator.plan;
    let index = this.served++;
    if (index >= plan.length) {
      const cycle = plan.length - this.emulator.repeatFrom;
      index = this.emulator.repeatFrom + ((index - this.emulator.repeatFrom) % cycle);
    }
    const planned = plan[index];
    const audio = stampFrames(planned.audio, this.stream, this.nextSeq);
    this.nextSeq += countFrames(planned.audio.length);
    return { text: planned.text, audio };
  }

  startResponse(params) {
    const planned = this.nextPlanned();
    const run = {
      id: newId('resp'), params, output: [], transcriptSent: '', cancelReason: null,
      timer: null, wake: () => {}, ...planned,
    };
    if ((params.conversation ?? 'auto') !== 'none') this.active = run;
    this.emit({ type: 'response.created', response: responseObject(this, run, 'in_progress') });
    this.stream_(run);
  }

  // Stream one response: deltas `interval` ms apart; stops early when cancelled.
  async stream_(run) {
    const pause = () => new Promise((resolve) => {
      run.wake = resolve;
      run.timer = setTimeout(resolve, this.emulator.interval);
    });
    const itemId = newId('item');
    const item = { id: itemId, object: 'realtime.item', type: 'message', status: 'in_progress', role: 'assistant', content: [] };
    const record = { role: 'assistant', audioBytes: 0 };
    const ids = { response_id: run.id, item_id: itemId, output_index: 0, content_index: 0 };
    const live = () => !run.cancelReason && !this.closed;
    const send = (event) => (live() ? (this.emit(event), true) : false);
    const pieces = run.text.match(/\s*\S+\s*/g) || (run.text ? [run.text] : []);
    const size = this.emulator.chunkMs * 8;
    const chunks = [];
    for (let at = 0; at < run.audio.length; at += size) chunks.push(run.audio.subarray(at, at + size));
    let sentPieces = 0, position = 0;
    const sendDelta = () => {
      const chunk = chunks[position++];
      const at = this.emit({ type: 'response.output_audio.delta', ...ids, delta: chunk.toString('base64') });
      record.audioBytes += chunk.length;
      this.emulator.hooks.audioDelta?.(this, chunk, at, run.id);
    };
    let ok = send({ type: 'response.output_item.added', response_id: run.id, output_index: 0, item });
    if (ok) {
      this.items.set(itemId, record);
      const previous = this.order.at(-1) ?? null;
      this.order.push(itemId);
      ok = send({ type: 'conversation.item.added', previous_item_id: previous, item });
    }
    ok = ok && send({ type: 'response.content_part.added', ...ids, part: { type: 'audio', transcript: '' } });
    while (ok && position < chunks.length) {
      const due = Math.ceil(((position + 1) * pieces.length) / chunks.length);
      while (ok && sentPieces < due) {
        ok = send({ type: 'response.output_audio_transcript.delta', ...ids, delta: pieces[sentPieces] });
        if (ok) run.transcriptSent += pieces[sentPieces++];
      }
      if (!ok || !live()) break;
      sendDelta();
      await pause();
    }
    ok = ok && live();
    const text = () => run.transcriptSent;
    const closeMessage = (status, sendFn) => {
      sendFn({ type: 'response.output_audio.done', ...ids });
      sendFn({ type: 'response.output_audio_transcript.done', ...ids, transcript: text() });
      sendFn({ type: 'response.content_part.done', ...ids, part: { type: 'audio', transcript: text() } });
      item.status = status;
      item.content = [{ type: 'output_audio', transcript: text() }];
      const previous = this.order[this.order.indexOf(itemId) - 1] ?? null;
      sendFn({ type: 'conversation.item.done', previous_item_id: previous, item });
      sendFn({ type: 'response.output_item.done', response_id: run.id, output_index: 0, item });
      run.output.push(item);
    };
    if (ok) {
      for (; sentPieces < pieces.length; sentPieces++) {
        send({ type: 'response.output_audio_transcript.delta', ...ids, delta: pieces[sentPieces] });
        run.transcriptSent += pieces[sentPieces];
      }
      closeMessage('completed', send);
      if (this.active === run) this.active = null; // before response.done goes out
      send({ type: 'response.done', response: responseObject(this, run, 'completed', { usage: usage(this, run, record.audioBytes) }) });
      send({ type: 'rate_limits.updated', ...RATE_LIMITS });
      return;
    }
    if (this.closed) {
      if (this.active === run) this.active = null;
      return;
    }
    // Cancelled: a few already generated deltas still go out, then the closing events.
    clearTimeout(run.timer);
    const emitAny = (event) => this.emit(event);
    for (let i = 0; i < this.emulator.lateDeltas && position < chunks.length; i++) sendDelta();
    closeMessage('incomplete', emitAny);
    if (this.active === run) this.active = null;
    const details = { type: 'cancelled', reason: run.cancelReason };
    const at = this.emit({
      type: 'response.done',
      response: responseObject(this, run, 'cancelled', { status_details: details, usage: usage(this, run, record.audioBytes) }),
    });
    this.cancelled.push([run.id, at]);
  }
}

// POST /v1/chat/completions: the post-call summary (a JSON object valid against the
// server's summary schema), as caller_engine/sim/openai/chat.py answers it.
export function chatCompletion(body) {
  const content = JSON.stringify({
    intent: 'appointment reminder', outcome: 'the caller listened to the agent',
    nextAction: 'none', scheduledDate: null, sentiment: 'neutral',
  });
  const prompt = Math.max(1, Math.floor(JSON.stringify(body.messages || []).length / 4));
  const completion = Math.max(1, Math.floor(content.length / 4));
  return {
    id: newId('chatcmpl').replace('_', '-'), object: 'chat.completion',
    created: Math.floor(Date.now() / 1000), model: body.model,
    choices: [{
      index: 0, message: { role: 'assistant', content, refusal: null, annotations: [] },
      logprobs: null, finish_reason: 'stop',
    }],
    usage: {
      prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    },
    service_tier: 'default', system_fingerprint: 'fp_emulator',
  };
}
