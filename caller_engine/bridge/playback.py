"""What the caller has actually heard, from Twilio's echoed marks. Pure.

Audio chunks sent to Twilio are followed by a mark naming (item, bytes sent so far) once at
least `mark_bytes` have gone out since the last one, and at the end of every response. Twilio
echoes a mark once the audio before it has played, so the last echoed mark of an item is how
much of it the caller heard (μ-law 8 kHz: 8 bytes per ms), to within one mark interval. On
`clear` Twilio drops unplayed audio and echoes every pending mark at once; those echoes mean
nothing and are ignored.
"""

from __future__ import annotations

BYTES_PER_MS = 8


def b64_decoded_len(payload: str) -> int:
    """Length of the bytes a base64 string encodes, without decoding it."""
    n = len(payload)
    if n == 0:
        return 0
    pad = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return n * 3 // 4 - pad


class PlaybackTracker:
    __slots__ = (
        "_cleared",
        "_pending",
        "_played",
        "_sent",
        "_seq",
        "_unmarked",
        "current_item",
        "mark_bytes",
    )

    def __init__(self, mark_bytes: int = 0) -> None:
        self.mark_bytes = mark_bytes
        self._seq = 0
        self._unmarked = 0
        self._pending: dict[str, tuple[str, int]] = {}
        self._cleared: set[str] = set()
        self._sent: dict[str, int] = {}
        self._played: dict[str, int] = {}
        self.current_item: str | None = None

    def sent(self, item_id: str, nbytes: int) -> str | None:
        """Record audio sent for an item (after `switching` to it). Returns the name of a mark
        to send after it when one is due, else None."""
        total = self._sent.get(item_id, 0) + nbytes
        self._sent[item_id] = total
        self.current_item = item_id
        self._unmarked += nbytes
        if self._unmarked < self.mark_bytes:
            return None
        return self._mark(item_id, total)

    def switching(self, item_id: str) -> str | None:
        """Audio of `item_id` is next: a mark closing the previous item's audio, if it has
        unmarked audio (send it before the new audio)."""
        if self.current_item is None or self.current_item == item_id:
            return None
        return self.flush()

    def flush(self) -> str | None:
        """A mark for audio sent since the last one (the end of a response), if any."""
        item_id = self.current_item
        if not self._unmarked or item_id is None:
            return None
        return self._mark(item_id, self._sent[item_id])

    def _mark(self, item_id: str, total: int) -> str:
        self._unmarked = 0
        self._seq += 1
        name = str(self._seq)
        self._pending[name] = (item_id, total)
        return name

    def echoed(self, name: str) -> bool:
        """Twilio echoed a mark. True when it confirms played audio."""
        if name in self._cleared:
            self._cleared.discard(name)
            return False
        entry = self._pending.pop(name, None)
        if entry is None:
            return False
        item_id, total = entry
        if total > self._played.get(item_id, 0):
            self._played[item_id] = total
        return True

    def clear(self) -> None:
        """We sent `clear`: marks still pending will be echoed without being heard."""
        self._cleared.update(self._pending)
        self._pending.clear()
        self._unmarked = 0

    @property
    def audible(self) -> bool:
        """Audio has been sent that the caller has not finished hearing."""
        return bool(self._pending) or self._unmarked > 0

    def sent_ms(self, item_id: str) -> int:
        return self._sent.get(item_id, 0) // BYTES_PER_MS

    def heard_ms(self, item_id: str) -> int:
        """Heard position of an item in whole ms, clamped to [0, audio sent]."""
        heard = min(self._played.get(item_id, 0), self._sent.get(item_id, 0))
        return max(0, heard) // BYTES_PER_MS
