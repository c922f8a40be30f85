// Twilio, as the server under test sees it: the REST API it places and hangs up calls
// through (caller_engine/sim/twilio/rest.py), the signed webhooks Twilio sends it (TwiML
// fetch, status callbacks), and one Media Stream per call (caller_engine/sim/twilio/media.py
// with continuous=False: `connected`, `start`, 20 ms `media` frames, marks echoed once the
// audio before them has played at 8000 bytes/s, `clear` dropping unplayed audio, `stop`).

import { createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import { connect } from './ws.mjs';
import { now } from './clock.mjs';

const E164 = /^\+[1-9]\d{6,14}$/;
export const USER_AGENT = 'Twilio.TmeWs/1.0';
export const newSid = (prefix) => prefix + randomBytes(16).toString('hex');

// X-Twilio-Signature: base64 HMAC-SHA1 of the URL then each name+value, names sorted.
export function sign(authToken, url, params = {}) {
  let text = url;
  for (const name of Object.keys(params).sort()) text += name + params[name];
  return createHmac('sha1', authToken).update(text).digest('base64');
}

// -- HTTP client (keep-alive) -------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

// POST `body` to `url`; resolves {status, text}.
export function post(url, body, headers = {}) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname, port: u.port || 80, path: u.pathname + u.search, method: 'POST', agent,
        headers: { ...headers, 'Content-Length': Buffer.byteLength(body) }, timeout: 15000,
      },
      (res) => {
        const parts = [];
        res.on('data', (d) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(parts).toString() }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`POST ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

export function postForm(url, params, headers = {}) {
  const body = new URLSearchParams(params).toString();
  return post(url, body, { ...headers, 'Content-Type': 'application/x-www-form-urlencoded' });
}

// -- TwiML --------------------------------------------------------------------------------

const unescapeXml = (s) =>
  s.replace(/&(lt|gt|quot|apos|amp);/g, (_, e) => ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' })[e]);

function attributes(tag) {
  const out = {};
  for (const m of tag.matchAll(/([\w:-]+)\s*=\s*("([^"]*)"|'([^']*)')/g)) out[m[1]] = unescapeXml(m[3] ?? m[4]);
  return out;
}

// The <Connect><Stream url> and its <Parameter>s; throws for any other TwiML.
export function parseStreamTwiml(text) {
  const connect_ = text.match(/<Connect\b[^>]*>([\s\S]*?)<\/Connect>/);
  const stream = connect_ && connect_[1].match(/<Stream\b([^>]*?)\/?>([\s\S]*?)(<\/Stream>|$)/);
  const url = stream && attributes(stream[1]).url;
  if (!url) throw new Error(`TwiML has no <Connect><Stream>: ${text.slice(0, 200)}`);
  const params = {};
  for (const m of stream[2].matchAll(/<Parameter\b([^>]*?)\/?>/g)) {
    const a = attributes(m[1]);
    params[a.name ?? ''] = a.value ?? '';
  }
  return { url, params };
}

// -- the REST API -------------------------------------------------------------------------

function twilioError(status, code, message) {
  return [status, { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status }];
}

export class RestApi {
  constructor({ accountSid, authToken }) {
    this.accountSid = accountSid;
    this.authToken = authToken;
    this.calls = new Map(); // sid → {sid, to, from, form, status}
    this.onHangup = () => {};
    this.counts = { created: 0, updated: 0, messages: 0 };
  }

  reset() {
    this.calls.clear();
    this.counts = { created: 0, updated: 0, messages: 0 };
  }

  // A request under /2010-04-01/; returns [status, json body].
  handle(method, path, headers, body) {
    const m = path.match(/^\/2010-04-01\/Accounts\/([^/]+)\/(Calls|Messages)(?:\/([^/.]+))?\.json$/);
    if (!m) return twilioError(404, 20404, `The requested resource ${path} was not found`);
    const expected = 'Basic ' + Buffer.from(`${this.accountSid}:${this.authToken}`).toString('base64');
    if (headers.authorization !== expected || m[1] !== this.accountSid) return twilioError(401, 20003, 'Authenticate');
    const form = Object.fromEntries(new URLSearchParams(body));
    if (m[2] === 'Messages') {
      this.counts.messages++;
      return [201, { sid: newSid('SM'), account_sid: this.accountSid, to: form.To, from: form.From, body: form.Body, status: 'queued' }];
    }
    if (method === 'POST' && !m[3]) return this.create(form);
    const call = this.calls.get(m[3]);
    if (!call || ['completed', 'canceled'].includes(call.status)) {
      return twilioError(404, 20404, `The requested resource ${path} was not found`);
    }
    if (method === 'POST') {
      this.counts.updated++;
      if (form.Status === 'completed' || form.Status === 'canceled') {
        call.status = form.Status;
        this.onHangup(call);
      }
    }
    return [200, this.view(call)];
  }

  create(form) {
    if (!form.Url && !form.Twiml) return twilioError(400, 21205, 'Url parameter is required.');
    if (!E164.test(form.To || '')) return twilioError(400, 21211, `Invalid 'To' Phone Number: ${form.To}`);
    if (!E164.test(form.From || '')) return twilioError(400, 21212, `Invalid 'From' Phone Number: ${form.From}`);
    const call = { sid: newSid('CA'), to: form.To, from: form.From, form, status: 'queued', created: new Date() };
    this.calls.set(call.sid, call);
    this.counts.created++;
    return [201, this.view(call)];
  }

  view(call) {
    return {
      sid: call.sid, account_sid: this.accountSid, to: call.to, from: call.from, status: call.status,
      direction: 'outbound-api', api_version: '2010-04-01', date_created: call.created.toUTCString(),
      uri: `/2010-04-01/Accounts/${this.accountSid}/Calls/${call.sid}.json`,
    };
  }
}

// -- one Media Stream ---------------------------------------------------------------------

export class MediaStream {
  // `hooks.media(at, ulawBuffer)` for each media frame from the server, `hooks.clear(at)`.
  constructor({ url, authToken, callSid, accountSid, customParameters, hooks }) {
    Object.assign(this, { url, authToken, callSid, accountSid, customParameters, hooks });
    this.streamSid = newSid('MZ');
    this.seq = 0; // sequenceNumber of our frames after `connected`
    this.chunk = 0;
    this.slot = 0; // next 20 ms slot of the media timestamps
    this.startedAt = null;
    this.closed = false;
    this.closeCode = null;
    this.closing = false;
    // playback: when the queued audio ends, and the marks waiting for it
    this.playEnd = 0;
    this.marks = []; // [name, due]
    this.markTimer = null;
  }

  async open() {
    const headers = { 'User-Agent': USER_AGENT };
    if (this.authToken) headers['X-Twilio-Signature'] = sign(this.authToken, this.url, {});
    this.ws = await connect(this.url, headers);
    this.ws.onText = (text) => this.onText(text);
    this.ws.onClose = (code) => {
      this.closed = true;
      this.closeCode ??= code;
      clearTimeout(this.markTimer);
    };
    this.ws.sendText('{"event":"connected","protocol":"Call","version":"1.0.0"}');
    this.send({
      event: 'start', sequenceNumber: String(++this.seq),
      start: {
        accountSid: this.accountSid, streamSid: this.streamSid, callSid: this.callSid, tracks: ['inbound'],
        mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
        customParameters: this.customParameters,
      },
      streamSid: this.streamSid,
    });
    this.startedAt = now();
  }

  send(message) {
    return this.ws.sendText(JSON.stringify(message));
  }

  // One 20 ms frame of caller audio (a Buffer), timestamped on the stream's slot clock.
  sendMedia(frame, at) {
    if (this.closed || this.closing) return false;
    this.slot = Math.max(this.slot, Math.floor((at - this.startedAt) / 0.02));
    const timestamp = this.slot++ * 20;
    return this.ws.sendText(
      `{"event":"media","sequenceNumber":"${++this.seq}","media":{"track":"inbound","chunk":"${++this.chunk}",` +
        `"timestamp":"${timestamp}","payload":"${frame.toString('base64')}"},"streamSid":"${this.streamSid}"}`,
    );
  }

  onText(text) {
    const at = now();
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.streamSid !== this.streamSid) return;
    if (msg.event === 'media') {
      const ulaw = Buffer.from(msg.media.payload, 'base64');
      if (this.playEnd < at) this.playEnd = at;
      this.playEnd += ulaw.length / 8000;
      this.echoDue(at);
      this.hooks.media(at, ulaw);
    } else if (msg.event === 'mark') {
      this.echoDue(at);
      if (this.playEnd <= at && this.marks.length === 0) this.echo(msg.mark.name);
      else this.queueMark(msg.mark.name, this.playEnd);
    } else if (msg.event === 'clear') {
      this.playEnd = at;
      const pending = this.marks;
      this.marks = [];
      clearTimeout(this.markTimer);
      for (const [name] of pending) this.echo(name);
      this.hooks.clear(at);
    }
  }

  queueMark(name, due) {
    this.marks.push([name, due]);
    if (this.marks.length === 1) this.armMarks();
  }

  armMarks() {
    clearTimeout(this.markTimer);
    if (!this.marks.length || this.closed) return;
    const wait = Math.max(0, (this.marks[0][1] - now()) * 1000);
    this.markTimer = setTimeout(() => {
      this.echoDue(now());
      this.armMarks();
    }, wait);
  }

  // Echo the marks whose audio has played by `at`.
  echoDue(at) {
    while (this.marks.length && this.marks[0][1] <= at) this.echo(this.marks.shift()[0]);
  }

  echo(name) {
    if (this.closed) return;
    this.send({ event: 'mark', sequenceNumber: String(++this.seq), streamSid: this.streamSid, mark: { name } });
  }

  // Hang-up: `stop`, then close the socket.
  async stop() {
    if (this.closed || this.closing) return;
    this.closing = true;
    clearTimeout(this.markTimer);
    this.send({
      event: 'stop', sequenceNumber: String(++this.seq), streamSid: this.streamSid,
      stop: { accountSid: this.accountSid, callSid: this.callSid },
    });
    await this.ws.close(1000);
  }
}
