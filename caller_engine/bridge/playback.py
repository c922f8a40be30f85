"""What the caller has actually heard, from Twilio's echoed marks. Pure.

Every audio chunk sent to Twilio is followed by a mark naming (item, bytes sent so far). Twilio
echoes a mark once the audio before it has played, so the last echoed mark of an item is how
much of it the caller heard (μ-law 8 kHz: 8 bytes per ms). On `clear` Twilio drops unplayed
audio and echoes every pending mark at once; those echoes mean nothing and are ignored.
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
    __slots__ = ("_cleared", "_pending", "_played", "_sent", "_seq", "current_item")

    def __init__(self) -> None:
        self._seq = 0
        self._pending: dict[str, tuple[str, int]] = {}
        self._cleared: set[str] = set()
        self._sent: dict[str, int] = {}
        self._played: dict[str, int] = {}
        self.current_item: str | None = None

    def sent(self, item_id: str, nbytes: int) -> str:
        """Record audio sent for an item; returns the name of the mark to send after it."""
        total = self._sent.get(item_id, 0) + nbytes
        self._sent[item_id] = total
        self.current_item = item_id
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

    @property
    def audible(self) -> bool:
        """Audio has been sent that the caller has not finished hearing."""
        return bool(self._pending)

    def sent_ms(self, item_id: str) -> int:
        return self._sent.get(item_id, 0) // BYTES_PER_MS

    def heard_ms(self, item_id: str) -> int:
        """Heard position of an item in whole ms, clamped to [0, audio sent]."""
        heard = min(self._played.get(item_id, 0), self._sent.get(item_id, 0))
        return max(0, heard) // BYTES_PER_MS
