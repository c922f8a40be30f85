"""Which agent audio survives an interruption. Pure.

Audio events carry the `event_id` of the agent response they belong to. An `interruption`
carries an id N: chunks of older responses (id < N) may still be in flight and are dropped;
chunks with id ≥ N are kept, because the reply that follows an interruption can carry N itself
(dropping `<= N` loses that whole reply).
"""

from __future__ import annotations


class InterruptionGate:
    __slots__ = ("floor",)

    def __init__(self) -> None:
        self.floor = 0

    def interrupted(self, event_id: int) -> bool:
        """An interruption arrived. True when it moves the floor (a new interruption); a
        repeated or older one changes nothing."""
        if event_id <= self.floor:
            return False
        self.floor = event_id
        return True

    def admits(self, event_id: int) -> bool:
        return event_id >= self.floor


FRAME_GROUP_BYTES = 480  # 60 ms of μ-law: whole 20 ms frames and whole base64 groups


def slice_bytes(mark_bytes: int) -> int:
    """The slice length for a playback mark interval: whole 20 ms frames that are also whole
    base64 groups, at least the interval (so each slice gets its own mark)."""
    return max(1, -(-mark_bytes // FRAME_GROUP_BYTES)) * FRAME_GROUP_BYTES


def b64_slices(payload: str, piece_bytes: int) -> list[str]:
    """Split base64 text into pieces of `piece_bytes` decoded bytes, rounded up to whole 3-byte
    groups (the last piece may be shorter), without decoding: cuts fall on 4-character
    boundaries, so every piece is valid base64 on its own. A piece at least as long as the
    playback mark interval gets a mark of its own."""
    step = max(4, -(-piece_bytes // 3) * 4)
    if len(payload) <= step:
        return [payload]
    return [payload[i : i + step] for i in range(0, len(payload), step)]
