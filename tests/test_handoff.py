"""sidecar/handoff.py: long-lived worker threads behind the store's writer and plugin calls."""

from __future__ import annotations

import threading

import anyio
import pytest

from sidecar.handoff import WorkerThreads, running_loop


def test_a_slow_job_holds_up_no_other_and_threads_stay_bounded() -> None:
    async def main() -> None:
        loop = running_loop()
        assert loop is not None
        workers = WorkerThreads("t-handoff", max_threads=3)
        release = threading.Event()
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(4):  # more blocked jobs than threads: the 4th waits its turn
                    tg.start_soon(workers.run, lambda: release.wait(30), loop)
                await anyio.sleep(0.05)
                assert len(workers._threads) == 3
                release.set()
            assert await workers.run(lambda: threading.current_thread().name, loop) == "t-handoff"
            assert len(workers._threads) == 3  # idle threads are reused, not added
        finally:
            release.set()
            workers.close()

    anyio.run(main)


def test_a_quick_job_finishes_while_a_slow_one_runs() -> None:
    async def main() -> None:
        loop = running_loop()
        assert loop is not None
        workers = WorkerThreads("t-handoff", max_threads=2)
        release = threading.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(workers.run, lambda: release.wait(30), loop)
                await anyio.sleep(0.01)
                with anyio.fail_after(10):
                    assert await workers.run(lambda: 42, loop) == 42
                assert not release.is_set()
                release.set()
        finally:
            release.set()
            workers.close()

    anyio.run(main)


def test_errors_come_back_and_a_stopped_pool_refuses_work() -> None:
    async def main() -> None:
        loop = running_loop()
        assert loop is not None
        workers = WorkerThreads("t-handoff", closed_message="stopped for the test")

        def fails() -> None:
            raise ValueError("inside")

        with pytest.raises(ValueError, match="inside"):
            await workers.run(fails, loop)
        with pytest.raises(RuntimeError, match="StopIteration"):
            await workers.run(lambda: next(iter(())), loop)
        threads = list(workers._threads)
        workers.close()
        assert threads and not any(t.is_alive() for t in threads)
        with pytest.raises(RuntimeError, match="stopped for the test"):
            await workers.run(lambda: None, loop)

    anyio.run(main)
