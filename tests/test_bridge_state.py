"""Pure state of the bridge: playback accounting, response state, interruption decisions."""

from __future__ import annotations

import base64

from caller_engine.bridge.playback import PlaybackTracker, b64_decoded_len
from caller_engine.bridge.turns import TurnState


def test_b64_decoded_len_matches_decoding() -> None:
    for n in range(0, 50):
        payload = base64.b64encode(bytes(range(n))).decode()
        assert b64_decoded_len(payload) == n


def test_heard_position_follows_echoed_marks() -> None:
    p = PlaybackTracker()
    m1 = p.sent("item1", 800)  # 100 ms
    m2 = p.sent("item1", 800)
    assert p.audible
    assert p.heard_ms("item1") == 0
    assert p.echoed(m1)
    assert p.heard_ms("item1") == 100
    assert p.echoed(m2)
    assert p.heard_ms("item1") == 200
    assert not p.audible


def test_marks_echoed_after_clear_do_not_count_as_heard() -> None:
    p = PlaybackTracker()
    m1 = p.sent("a", 800)
    m2 = p.sent("a", 800)
    m3 = p.sent("a", 800)
    p.echoed(m1)
    p.clear()
    assert not p.audible
    assert not p.echoed(m2)
    assert not p.echoed(m3)
    assert p.heard_ms("a") == 100
    assert p.sent_ms("a") == 300


def test_heard_is_integer_and_clamped() -> None:
    p = PlaybackTracker()
    m = p.sent("a", 13)
    p.echoed(m)
    assert p.heard_ms("a") == 1
    assert p.heard_ms("unknown") == 0


def test_never_two_creates_and_queue_flushes_on_done() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    assert t.request("greet") is True
    assert t.request(None) is False  # our create is in flight
    t.started("r1")
    assert t.request(None) is False  # coalesced with the queued plain request
    assert t.queued == 1
    send, instructions = t.done("r1")
    assert send is True and instructions is None
    assert t.responding
    t.started("r2")
    assert t.done("r2") == (False, None)
    assert not t.responding


def test_a_request_crossing_the_models_own_response_goes_again_after_it() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    assert t.request("after the tool") is True
    t.started("vad", requested=False)  # server VAD's own response: ours is still unconfirmed
    assert t.request(None) is False
    assert t.refused(busy=True) == (False, None)  # ours crossed it: wait for its done
    assert t.queued == 2
    assert t.done("vad") == (True, "after the tool")  # the refused request goes first
    t.started("ours", requested=True)
    assert t.done("ours") == (True, None)
    t.started("next", requested=True)
    assert t.done("next") == (False, None)
    assert not t.responding


def test_our_tagged_response_confirms_the_request_and_the_models_own_does_not() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    t.request()
    t.started("vad", requested=False)
    assert t.done("vad") == (False, None)
    assert t.responding  # still waiting for ours: no second create
    assert t.request("x") is False
    t.started("ours", requested=True)
    assert t.done("ours") == (True, "x")


def test_a_late_done_of_an_older_response_does_not_end_a_newer_one() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    t.request()
    t.started("old", requested=True)
    t.started("new", requested=False)
    assert t.done("old") == (False, None)
    assert t.active == "new"
    assert t.can_cancel()
    assert t.request() is False  # "new" is live: queued, not refused
    p = PlaybackTracker()
    plan = t.speech_started(p)
    assert plan is not None and plan.response_id == "new"
    assert not t.accepts("new") and t.accepts("old")
    assert t.done("new") == (True, None)


def test_a_request_refused_for_good_lets_the_next_one_go() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    assert t.request("bad") is True
    assert t.request("good") is False
    assert t.refused(busy=False) == (True, "good")
    assert t.refused(busy=False) == (False, None)
    assert not t.responding


def test_a_refusal_with_nothing_live_asks_again_a_few_times_then_waits() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    assert t.request("greet") is True
    for _ in range(3):
        assert t.refused(busy=True) == (True, "greet")
    assert t.refused(busy=True) == (False, None)  # kept for the next response's end
    assert t.queued == 1
    assert t.refused(busy=True) == (False, None)  # nothing of ours is unconfirmed now
    t.started("other", requested=False)
    assert t.done("other") == (True, "greet")


def test_cancel_only_when_a_response_is_active() -> None:
    t = TurnState(server_cancels_on_barge_in=False)
    assert not t.can_cancel()
    t.request()
    assert not t.can_cancel()  # requested, not created: nothing to cancel yet
    t.started("r1")
    assert t.can_cancel()
    t.done("r1")
    assert not t.can_cancel()


def test_barge_in_while_audible_clears_truncates_and_drops_late_audio() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    p = PlaybackTracker()
    t.request()
    t.started("r1")
    first = p.sent("item1", 1600)
    p.sent("item1", 1600)
    p.echoed(first)
    plan = t.speech_started(p)
    assert plan is not None
    assert plan.clear is True
    assert plan.truncate == ("item1", 200)
    assert plan.cancel is False  # the server cancels by itself
    assert not t.accepts("r1")


def test_barge_in_cancels_when_server_does_not() -> None:
    t = TurnState(server_cancels_on_barge_in=False)
    p = PlaybackTracker()
    t.request()
    t.started("r1")
    p.sent("i", 800)
    plan = t.speech_started(p)
    assert plan is not None
    assert plan.cancel is True
    assert plan.truncate == ("i", 0)


def test_speech_when_agent_silent_changes_nothing() -> None:
    t = TurnState(server_cancels_on_barge_in=True)
    p = PlaybackTracker()
    assert t.speech_started(p) is None
    m = p.sent("i", 800)
    p.echoed(m)
    assert t.speech_started(p) is None


def test_audio_still_playing_after_response_done_is_cleared_without_cancel() -> None:
    t = TurnState(server_cancels_on_barge_in=False)
    p = PlaybackTracker()
    t.request()
    t.started("r1")
    p.sent("i", 8000)
    t.done("r1")
    plan = t.speech_started(p)
    assert plan is not None
    assert plan.clear is True
    assert plan.cancel is False
    assert plan.truncate == ("i", 0)


def test_marks_every_interval_and_at_the_end_of_a_response() -> None:
    p = PlaybackTracker(mark_bytes=1600)  # 200 ms
    assert p.sent("a", 800) is None
    assert p.audible  # unmarked audio is still playing
    first = p.sent("a", 800)
    assert first is not None
    assert p.sent("a", 400) is None
    last = p.flush()
    assert last is not None
    assert p.flush() is None
    assert p.echoed(first)
    assert p.heard_ms("a") == 200
    assert p.audible
    assert p.echoed(last)
    assert p.heard_ms("a") == 250
    assert not p.audible


def test_switching_items_closes_the_previous_one() -> None:
    p = PlaybackTracker(mark_bytes=1600)
    p.sent("a", 800)
    closing = p.switching("b")
    assert closing is not None
    assert p.switching("b") is None or p.current_item == "a"
    p.sent("b", 800)
    assert p.echoed(closing)
    assert p.heard_ms("a") == 100
    assert p.heard_ms("b") == 0


def test_clear_forgets_unmarked_audio() -> None:
    p = PlaybackTracker(mark_bytes=1600)
    p.sent("a", 800)
    p.clear()
    assert not p.audible
    assert p.flush() is None
