"""The prefetch thread: same items in the same order, errors where they happened, a consistent
pause."""

import threading
import time

import pytest

from streamfm.training.prefetch import Prefetcher


def counting(n, state, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad item {i}")
        state["produced"] = i + 1  # updated before the yield, as the loop's stages do
        yield i


def test_items_arrive_in_order_and_end():
    state = {}
    p = Prefetcher(counting(50, state), depth=3)
    assert list(p) == list(range(50))
    with pytest.raises(StopIteration):
        next(p)
    p.close()


def test_an_error_is_raised_after_the_items_before_it():
    p = Prefetcher(counting(10, {}, fail_at=6), depth=2)
    got = []
    with pytest.raises(ValueError, match="bad item 6"):
        for item in p:
            got.append(item)
    assert got == list(range(6))
    p.close()


def test_paused_state_matches_the_items_produced():
    state = {}
    p = Prefetcher(counting(1000, state), depth=4)
    consumed = 0
    for item in p:
        consumed += 1
        if item % 97 == 0:
            with p.paused() as pending:
                # Everything produced is either consumed or pending, and nothing moves.
                produced = state["produced"]
                assert produced == consumed + len(pending)
                assert pending == list(range(consumed, produced))
                assert len(pending) <= 4
                time.sleep(0.002)
                assert state["produced"] == produced
    assert consumed == 1000
    p.close()


def test_the_producer_runs_ahead_at_most_depth_items():
    state = {}
    p = Prefetcher(counting(100, state), depth=2)
    assert next(p) == 0
    time.sleep(0.05)
    assert state["produced"] <= 1 + 2
    p.close()


def test_close_stops_a_producer_waiting_for_room():
    started = threading.Event()

    def endless():
        started.set()
        i = 0
        while True:
            yield i
            i += 1

    p = Prefetcher(endless(), depth=1)
    started.wait(1)
    p.close()  # returns: the producer was waiting for the consumer
