// Minimal RFC 6455 WebSockets over node:net / node:http, no dependencies.
//
// Text frames only (binary frames are delivered as text too), no extensions, no TLS.
// Client frames are masked with keys from a pooled random buffer; server frames are not.
// Pings are answered with pongs; a close frame is answered once and the socket ended.

import { createHash, randomFillSync } from 'node:crypto';
import http from 'node:http';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xa;

// Masking keys, 4 bytes each, taken from a 4 KiB random pool refilled when used up.
const keyPool = Buffer.alloc(4096);
let keyOffset = keyPool.length;
function nextKey() {
  if (keyOffset >= keyPool.length) {
    randomFillSync(keyPool);
    keyOffset = 0;
  }
  keyOffset += 4;
  return keyOffset - 4;
}

// Write the header of a final frame (`opcode`, payload length `n`); returns its size.
function frameHead(out, opcode, n) {
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  out[0] = 0x80 | opcode;
  if (n < 126) {
    out[1] = n;
  } else if (n < 65536) {
    out[1] = 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    out.writeUInt32BE(n >>> 0, 6);
  }
  return head;
}

// Mask out[start, start + n) in place with a fresh key written just before it (masking
// and unmasking are the same XOR).
function maskInPlace(out, start, n) {
  const k = nextKey();
  keyPool.copy(out, start - 4, k, k + 4);
  unmask(out, start, start + n, start - 4);
}

// One frame: FIN set, `opcode`, `payload` (a Buffer), masked when `mask` is true.
function encodeFrame(opcode, payload, mask) {
  const n = payload.length;
  const size = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(size + (mask ? 4 : 0) + n);
  const head = frameHead(out, opcode, n);
  if (!mask) {
    payload.copy(out, head);
    return out;
  }
  out[1] |= 0x80;
  payload.copy(out, head + 4);
  maskInPlace(out, head + 4, n);
  return out;
}

// A text frame of `text`, encoded straight into the frame (no intermediate buffer).
function encodeText(text, mask) {
  const n = Buffer.byteLength(text, 'utf8');
  const size = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(size + (mask ? 4 : 0) + n);
  const head = frameHead(out, OP_TEXT, n);
  const start = head + (mask ? 4 : 0);
  out.write(text, start, 'utf8');
  if (mask) {
    out[1] |= 0x80;
    maskInPlace(out, start, n);
  }
  return out;
}

function unmask(buf, start, end, keyAt) {
  const k0 = buf[keyAt], k1 = buf[keyAt + 1], k2 = buf[keyAt + 2], k3 = buf[keyAt + 3];
  let i = start;
  for (; i + 4 <= end; i += 4) {
    buf[i] ^= k0;
    buf[i + 1] ^= k1;
    buf[i + 2] ^= k2;
    buf[i + 3] ^= k3;
  }
  for (; i < end; i++) buf[i] ^= buf[keyAt + ((i - start) & 3)];
}

// One open WebSocket. Set `onText(string)` and `onClose(code)` after creating it.
export class WsConn {
  constructor(socket, { client }, head) {
    this.socket = socket;
    this.client = client; // client side: our frames are masked
    this.onText = () => {};
    this.onClose = () => {};
    this.closed = false;
    this.closeCode = null;
    this._closeSent = false;
    this._buf = null;
    this._fragments = [];
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this._data(chunk));
    socket.on('close', () => this._finish(this.closeCode ?? 1006));
    socket.on('error', () => {}); // 'close' follows
    if (head && head.length) this._data(head);
  }

  // Send one text message (a string); false once the connection is closing.
  sendText(text) {
    if (this.closed || this._closeSent) return false;
    this.socket.write(encodeText(text, this.client));
    return true;
  }

  // Start the closing handshake; resolves when the socket has closed (or after `within` ms).
  close(code = 1000, within = 2000) {
    if (!this.closed && !this._closeSent) {
      this._closeSent = true;
      const body = Buffer.alloc(2);
      body.writeUInt16BE(code, 0);
      this.socket.write(encodeFrame(OP_CLOSE, body, this.client));
      if (!this.client) this.socket.end(); // the server ends the TCP connection
    }
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, within);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  _finish(code) {
    if (this.closed) return;
    this.closed = true;
    this.closeCode = code;
    this.onClose(code);
  }

  _data(chunk) {
    let buf = this._buf ? Buffer.concat([this._buf, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= 2) {
      const b0 = buf[at], b1 = buf[at + 1];
      let len = b1 & 0x7f;
      let pos = at + 2;
      if (len === 126) {
        if (buf.length - pos < 2) break;
        len = buf.readUInt16BE(pos);
        pos += 2;
      } else if (len === 127) {
        if (buf.length - pos < 8) break;
        len = buf.readUInt32BE(pos) * 2 ** 32 + buf.readUInt32BE(pos + 4);
        pos += 8;
      }
      const masked = (b1 & 0x80) !== 0;
      const keyAt = pos;
      if (masked) pos += 4;
      if (buf.length - pos < len) break;
      if (masked) unmask(buf, pos, pos + len, keyAt);
      this._frame(b0 & 0x0f, (b0 & 0x80) !== 0, buf.subarray(pos, pos + len));
      at = pos + len;
    }
    this._buf = at < buf.length ? Buffer.from(buf.subarray(at)) : null;
  }

  _frame(opcode, fin, payload) {
    switch (opcode) {
      case OP_TEXT:
      case OP_BINARY:
      case OP_CONT:
        if (!fin || this._fragments.length) {
          this._fragments.push(Buffer.from(payload));
          if (!fin) return;
          payload = Buffer.concat(this._fragments);
          this._fragments = [];
        }
        if (!this.closed) this.onText(payload.toString('utf8'));
        return;
      case OP_PING:
        if (!this._closeSent) this.socket.write(encodeFrame(OP_PONG, Buffer.from(payload), this.client));
        return;
      case OP_PONG:
        return;
      case OP_CLOSE: {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.closeCode = code;
        if (!this._closeSent) {
          this._closeSent = true;
          const body = Buffer.alloc(2);
          body.writeUInt16BE(code === 1005 ? 1000 : code, 0);
          this.socket.write(encodeFrame(OP_CLOSE, body, this.client));
        }
        this.socket.end();
        this._finish(code);
        return;
      }
      default:
        this.socket.destroy();
    }
  }
}

function acceptKey(key) {
  return createHash('sha1').update(key + GUID).digest('base64');
}

// Server side: complete the upgrade of an http 'upgrade' request; returns the WsConn.
export function acceptUpgrade(req, socket, head) {
  const key = req.headers['sec-websocket-key'];
  if (!key || (req.headers.upgrade || '').toLowerCase() !== 'websocket') {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    return null;
  }
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`,
  );
  return new WsConn(socket, { client: false }, head);
}

// Client side: open `url` (ws://) with extra `headers`; resolves to a WsConn.
export function connect(url, headers = {}, timeoutMs = 15000) {
  const u = new URL(url.replace(/^ws/, 'http'));
  const key = randomFillSync(Buffer.alloc(16)).toString('base64');
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port || 80,
      path: u.pathname + u.search,
      headers: {
        ...headers,
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': key,
      },
      timeout: timeoutMs,
    });
    req.on('upgrade', (res, socket, head) => {
      if (res.headers['sec-websocket-accept'] !== acceptKey(key)) {
        socket.destroy();
        reject(new Error('bad Sec-WebSocket-Accept'));
        return;
      }
      resolve(new WsConn(socket, { client: true }, head));
    });
    req.on('response', (res) => {
      res.resume();
      reject(new Error(`upgrade refused: HTTP ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error('upgrade timed out')));
    req.on('error', reject);
    req.end();
  });
}
