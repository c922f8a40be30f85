// The clock every timestamp is taken on: CLOCK_MONOTONIC in seconds (process.hrtime reads
// it on Linux), the clock Python's time.monotonic() and asyncio's loop.time() read too, so
// the bench can put these times next to its own /proc samples.

export function now() {
  const [s, ns] = process.hrtime();
  return s + ns / 1e9;
}
