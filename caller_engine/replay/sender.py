"""The caller side of every call, sent from one task: each frame goes out at its due time.

One timer per frame per call would cost the load generator more than the frames do, so a
single task keeps a heap of calls by next due time and sends every frame due within
`slack` seconds at each wake-up. Send times are recorded as the frames actually leave, so
the slack adds no error to the measurements; calls start at random phases of the 20 ms
frame clock, as real calls do.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from dataclasses import dataclass, field

from caller_engine.replay import markers
from caller_engine.replay.probes import CallProbe, Recorder
from caller_engine.replay.scenario import CallerAudio
from caller_engine.sim.twilio.media import TwilioMediaClient


@dataclass
class Player:
    client: TwilioMediaClient
    probe: CallProbe
    audio: CallerAudio
    t0: float
    marked: bool
    done: asyncio.Future[None]
    index: int = 0
    error: str | None = field(default=None)

    @property
    def due(self) -> float:
        return self.t0 + self.audio.offsets[self.index]


class FrameSender:
    def __init__(self, recorder: Recorder, slack: float = 0.001) -> None:
        self.recorder = recorder
        self.slack = slack
        self._heap: list[tuple[float, int, Player]] = []
        self._order = itertools.count()
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="frame-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, _, player in self._heap:
            if not player.done.done():
                player.done.set_result(None)
        self._heap.clear()

    def play(
        self,
        client: TwilioMediaClient,
        probe: CallProbe,
        audio: CallerAudio,
        *,
        marked: bool,
        delay: float = 0.0,
    ) -> asyncio.Future[None]:
        """Schedule a call's frames from now + `delay`; the future is done after the last one
        (or when the stream closed)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not audio.frames:
            done.set_result(None)
            return done
        player = Player(client, probe, audio, loop.time() + delay, marked, done)
        probe.audio_t0 = player.t0
        self._push(player)
        return done

    def _push(self, player: Player) -> None:
        heapq.heappush(self._heap, (player.due, next(self._order), player))
        wake = self._wake
        if wake is not None and not wake.done() and self._heap[0][2] is player:
            wake.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            if not heap:
                await self._sleep(None)
                continue
            now = loop.time()
            if heap[0][0] > now + self.slack:
                await self._sleep(heap[0][0])
                continue
            while heap and heap[0][0] <= now + self.slack:
                _, _, player = heapq.heappop(heap)
                if await self._send(player):
                    heapq.heappush(heap, (player.due, next(self._order), player))
                elif not player.done.done():
                    player.done.set_result(None)

    async def _sleep(self, until: float | None) -> None:
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        timer = None if until is None else loop.call_at(until, _resolve, wake)
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    async def _send(self, player: Player) -> bool:
        """Send the player's next frame; False once it has no more (or its stream closed)."""
        client, probe = player.client, player.probe
        if client.closed.is_set():
            probe.error = probe.error or f"stream closed by the server (code {client.close_code})"
            return False
        seq = player.index
        frame = player.audio.frames[seq]
        data = markers.stamp(frame, probe.stream, seq) if player.marked else frame
        at = asyncio.get_running_loop().time()
        if seq == 0:
            # A late first frame moves the whole call: its frames keep their spacing instead
            # of bunching up to catch up with a start that has passed.
            player.t0 = at - player.audio.offsets[0]
        probe.sent_at.append(at)
        try:
            await client.send_audio(data, paced=False)
        except ConnectionError as exc:
            probe.error = probe.error or f"send failed: {exc}"
            return False
        first = player.audio.utterances.get(seq)
        if first is not None and first < len(probe.sent_at):
            self.recorder.speech_end(probe, probe.sent_at[first], at)
        player.index += 1
        return player.index < len(player.audio.frames)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
