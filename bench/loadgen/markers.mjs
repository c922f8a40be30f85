// Frame markers, byte for byte as caller_engine/replay/markers.py writes and finds them.
//
// A marker is 18 μ-law bytes: a 6-byte magic, then 12 data nibbles (stream: 16 bits,
// sequence: 24 bits, check: the low byte of the CRC-32 of stream (2 bytes) + seq (3 bytes),
// big-endian), each nibble written as the low-amplitude code 0xF0 + nibble.

export const MAGIC = Buffer.from([0x70, 0xf5, 0x7a, 0xf3, 0x7c, 0xf6]);
export const MARKER_BYTES = MAGIC.length + 12;
export const MAX_STREAM = 0xffff;
export const MAX_SEQ = 0xffffff;

const CRC_TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c;
}

function check(stream, seq) {
  const bytes = [stream >> 8, stream & 0xff, seq >> 16, (seq >> 8) & 0xff, seq & 0xff];
  let c = -1;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) & 0xff;
}

// Write the marker of (stream, seq) into `buf` at `at`.
export function writeMarker(buf, at, stream, seq) {
  MAGIC.copy(buf, at);
  const nibbles = [
    stream >> 12, (stream >> 8) & 15, (stream >> 4) & 15, stream & 15,
    seq >> 20, (seq >> 16) & 15, (seq >> 12) & 15, (seq >> 8) & 15, (seq >> 4) & 15, seq & 15,
  ];
  const c = check(stream, seq);
  nibbles.push(c >> 4, c & 15);
  for (let i = 0; i < 12; i++) buf[at + MAGIC.length + i] = 0xf0 | nibbles[i];
}

export function encode(stream, seq) {
  const out = Buffer.alloc(MARKER_BYTES);
  writeMarker(out, 0, stream, seq);
  return out;
}

// The marker whose data nibbles begin at `start`, or null when they do not check out.
function decodeAt(data, start) {
  let stream = 0, seq = 0, c = 0;
  for (let i = 0; i < 12; i++) {
    const code = data[start + i];
    if (code < 0xf0) return null;
    const nibble = code & 15;
    if (i < 4) stream = (stream << 4) | nibble;
    else if (i < 10) seq = seq * 16 + nibble;
    else c = (c << 4) | nibble;
  }
  return check(stream, seq) === c ? { stream, seq } : null;
}

// Every valid marker in `data` (a Buffer), in order: calls `found(stream, seq)`.
export function forEachMarker(data, found) {
  const end = data.length - MARKER_BYTES;
  let at = data.indexOf(MAGIC);
  while (at >= 0 && at <= end) {
    const marker = decodeAt(data, at + MAGIC.length);
    if (marker !== null) {
      found(marker.stream, marker.seq);
      at = data.indexOf(MAGIC, at + MARKER_BYTES);
    } else {
      at = data.indexOf(MAGIC, at + 1);
    }
  }
}

export function find(data) {
  const out = [];
  forEachMarker(data, (stream, seq) => out.push({ stream, seq }));
  return out;
}

// A copy of `frame` with a marker over its first bytes.
export function stamp(frame, stream, seq) {
  const out = Buffer.from(frame);
  writeMarker(out, 0, stream, seq);
  return out;
}

// A copy of `audio` with a marker at the start of every `frameBytes` frame, from `firstSeq`
// (a last frame shorter than a marker is left as it is).
export function stampFrames(audio, stream, firstSeq, frameBytes = 160) {
  const out = Buffer.from(audio);
  let seq = firstSeq;
  for (let at = 0; at <= out.length - MARKER_BYTES; at += frameBytes) writeMarker(out, at, stream, seq++);
  return out;
}

export function countFrames(size, frameBytes = 160) {
  return size < MARKER_BYTES ? 0 : Math.floor((size - MARKER_BYTES) / frameBytes) + 1;
}
