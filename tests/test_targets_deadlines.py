"""The watchdog timeout that guards every Redis call of a target (targets/deadlines.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from cachestorm.targets.deadlines import Deadlines


def test_a_slow_call_times_out_close_to_the_deadline():
    async def scenario():
        deadlines = Deadlines(0.05)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await deadlines.run(asyncio.sleep(5))
        elapsed = time.monotonic() - started
        assert await deadlines.run(asyncio.sleep(0.001, result="fast")) == "fast"
        await deadlines.close()
        return elapsed

    elapsed = asyncio.run(scenario())
    # never early; late only by a tick plus scheduling noise (generous for a loaded 2-core box),
    # and far from the 5 s the guarded call would take without the watchdog
    assert 0.05 <= elapsed < 0.3, elapsed


def test_the_timeout_does_not_leak_into_the_callers_next_await():
    async def scenario():
        deadlines = Deadlines(0.02)
        with pytest.raises(TimeoutError):
            await deadlines.run(asyncio.sleep(1))
        await asyncio.sleep(0.1)  # would raise CancelledError if the cancel were still pending
        task = asyncio.current_task()
        await deadlines.close()
        return task.cancelling()

    assert asyncio.run(scenario()) == 0


def test_someone_elses_cancel_passes_through():
    async def scenario():
        deadlines = Deadlines(5)
        task = asyncio.create_task(deadlines.run(asyncio.sleep(5)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await deadlines.close()

    asyncio.run(scenario())


def test_many_concurrent_calls_time_out_independently():
    async def scenario():
        deadlines = Deadlines(0.05)

        async def one(delay):
            try:
                return await deadlines.run(asyncio.sleep(delay, result="ok"))
            except TimeoutError:
                return "timeout"

        results = await asyncio.gather(*(one(0.001 if i % 2 else 1.0) for i in range(100)))
        await deadlines.close()
        return results

    results = asyncio.run(scenario())
    assert results.count("ok") == 50 and results.count("timeout") == 50
