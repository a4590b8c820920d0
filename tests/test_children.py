"""sidecar.children with real child processes (this interpreter, `-c` scripts)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import psutil
import pytest

from sidecar import children
from sidecar.children import ChildProcesses, LineTooLong, RLimits

PY = sys.executable
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and rlimits")


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def gone(pid: int) -> bool:
    """The pid no longer names a running process (reaped, or a zombie of someone else)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


ECHO = py("""
    import sys
    for line in sys.stdin:
        sys.stdout.write(line.upper())
        sys.stdout.flush()
""")

IGNORES_SIGTERM = py("""
    import signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdin.close()  # EOF on stdin does not end it either
    print("ready", flush=True)
    while True:
        time.sleep(1)
""")


def test_echo_round_trip() -> None:
    async def main() -> list[bytes]:
        async with children.open(ECHO) as child:
            got = []
            for word in (b"hello", b"w\xc3\xb6rld", b""):
                await child.send_line(word)
                got.append(await child.read_line())
            await child.close_stdin()
            assert await child.read_line() is None  # stdout ends once it exits
            assert await child.wait() == 0
            return got

    assert anyio.run(main) == [b"HELLO", "WÖRLD".encode(), b""]


def test_lines_iterates_until_the_output_ends_and_keeps_a_last_partial_line() -> None:
    async def main() -> list[bytes]:
        async with children.open(py("import sys; sys.stdout.write('a\\nb\\r\\n\\nlast')")) as child:
            return [line async for line in child.lines()]

    assert anyio.run(main) == [b"a", b"b\r", b"", b"last"]


def test_a_line_over_the_limit_raises() -> None:
    async def main() -> None:
        async with children.open(py("print('x' * 100_000); print('short')")) as child:
            with pytest.raises(LineTooLong):
                await child.read_line(max_line=1024)

    anyio.run(main)


def test_a_line_exactly_at_the_limit_is_fine() -> None:
    async def main() -> bytes | None:
        async with children.open(py("print('y' * 1024)")) as child:
            return await child.read_line(max_line=1024)

    assert anyio.run(main) == b"y" * 1024


@posix_only
def test_leaving_the_block_terminates_a_well_behaved_child_with_sigterm() -> None:
    async def main() -> tuple[int, int | None, float]:
        async with children.open(py("import time; print('up', flush=True); time.sleep(60)"), grace=5) as child:
            assert await child.read_line() == b"up"
            began = time.monotonic()
        return child.pid, child.returncode, time.monotonic() - began

    pid, code, took = anyio.run(main)
    assert code == -signal.SIGTERM
    assert took < 2.0  # it did not need the grace period
    assert gone(pid)


@posix_only
def test_cancellation_terminates_then_kills_a_child_that_ignores_sigterm() -> None:
    async def main() -> tuple[int, int | None, float]:
        registry = ChildProcesses(grace=0.5)
        with anyio.move_on_after(30):
            async with registry.open(IGNORES_SIGTERM) as child:
                assert await child.read_line() == b"ready"
                with anyio.CancelScope() as scope:
                    scope.cancel()  # the caller is cancelled while using the child
                    began = time.monotonic()
                    await anyio.sleep(60)
        assert len(registry) == 0
        return child.pid, child.returncode, time.monotonic() - began

    pid, code, took = anyio.run(main)
    assert code == -signal.SIGKILL  # SIGTERM was ignored; SIGKILL after the grace
    assert 0.45 <= took < 5
    assert gone(pid)


@posix_only
def test_an_outer_cancel_scope_ends_the_child_too() -> None:
    async def main() -> int:
        with anyio.move_on_after(0.3):
            async with children.open(IGNORES_SIGTERM, grace=0.2) as child:
                await anyio.sleep(60)
        return child.pid

    pid = anyio.run(main)
    assert gone(pid)


@posix_only
def test_cpu_seconds_limit_kills_a_busy_loop() -> None:
    async def main() -> tuple[int, float]:
        began = time.monotonic()
        async with children.open(py("while True: pass"), rlimits=RLimits(cpu_seconds=1)) as child:
            with anyio.fail_after(20):
                code = await child.wait()
        return code, time.monotonic() - began

    code, took = anyio.run(main)
    assert code in (-signal.SIGXCPU, -signal.SIGKILL)
    assert took < 20


@posix_only
def test_open_files_and_address_space_limits() -> None:
    probe = py("""
        import os
        opened = []
        try:
            for _ in range(200):
                opened.append(os.open(os.devnull, os.O_RDONLY))
            print("no limit")
        except OSError as exc:
            print("files", exc.errno)
        try:
            block = bytearray(1 << 30)
            print("no limit")
        except MemoryError:
            print("memory")
    """)

    async def main() -> list[bytes]:
        limits = RLimits(open_files=32, address_space=512 << 20)
        async with children.open(probe, rlimits=limits) as child:
            return [line async for line in child.lines()]

    import errno

    assert anyio.run(main) == [f"files {errno.EMFILE}".encode(), b"memory"]


def test_environment_scrubbed_or_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_TEST_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("PATH", os.environ.get("PATH", "/usr/bin"))
    dump = py("import json, os; print(json.dumps(dict(os.environ)))")

    async def env_of(**kwargs: object) -> dict[str, str]:
        async with children.open(dump, **kwargs) as child:  # type: ignore[arg-type]
            line = await child.read_line()
            assert line is not None
            return json.loads(line)  # type: ignore[no-any-return]

    scrubbed = anyio.run(lambda: env_of(scrub_env=True, env={"CHILD_ONLY": "1"}))
    assert "SIDECAR_TEST_API_KEY" not in scrubbed
    assert scrubbed["CHILD_ONLY"] == "1" and scrubbed["PATH"] == os.environ["PATH"]
    assert set(scrubbed) <= set(children.SAFE_ENV) | {"CHILD_ONLY", "LC_CTYPE", "__CF_USER_TEXT_ENCODING"}
    inherited = anyio.run(lambda: env_of(env={"SIDECAR_TEST_API_KEY": None, "EXTRA": "x"}))
    assert "SIDECAR_TEST_API_KEY" not in inherited and inherited["EXTRA"] == "x"
    assert anyio.run(lambda: env_of())["SIDECAR_TEST_API_KEY"] == "sk-must-not-leak"


def test_stderr_tail_is_captured_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    crash = py("""
        import sys
        for i in range(500):
            print(f"progress {i}", file=sys.stderr)
        print("Traceback: it broke", file=sys.stderr)
        sys.exit(3)
    """)

    async def main() -> tuple[int, list[str]]:
        registry = ChildProcesses(stderr_lines=20)
        async with registry.open(crash, name="crasher", stderr_log_level=logging.INFO) as child:
            code = await child.wait()
        return code, child.stderr_tail()

    with caplog.at_level(logging.INFO, logger="sidecar.children"):
        code, tail = anyio.run(main)
    assert code == 3
    assert tail == [f"progress {i}" for i in range(481, 500)] + ["Traceback: it broke"]
    assert any("crasher" in r.getMessage() and "Traceback: it broke" in r.getMessage() for r in caplog.records)


def test_a_child_flooding_stderr_does_not_hang() -> None:
    """stderr is drained while the caller only reads stdout: no deadlock on a full pipe."""
    flood = py("""
        import sys
        sys.stderr.write("e" * 1_000_000 + "\\n")
        sys.stderr.flush()
        print("done", flush=True)
    """)

    async def main() -> bytes | None:
        with anyio.fail_after(20):
            async with children.open(flood) as child:
                line = await child.read_line()
                await child.wait()
                return line

    assert anyio.run(main) == b"done"


@posix_only
def test_registry_lists_and_terminates_all() -> None:
    sleeper = py("import time; print('up', flush=True); time.sleep(60)")

    async def main() -> tuple[list[int], list[int | None]]:
        registry = ChildProcesses(grace=1.0)
        started: list[children.Child] = []
        ready: list[bytes | None] = []

        async def run_one(i: int) -> None:
            argv = IGNORES_SIGTERM if i == 0 else sleeper
            async with registry.open(argv, name=f"worker{i}") as child:
                started.append(child)
                ready.append(await child.read_line())  # its signal handling is in place
                await anyio.sleep(60)  # until terminate_all ends the child and then we are cancelled

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(run_one, i)
            with anyio.fail_after(20):
                while len(ready) < 3:
                    await anyio.sleep(0.02)
            assert sorted(ready) == [b"ready", b"up", b"up"]  # type: ignore[type-var]
            listed = registry.list()
            assert sorted(info.name for info in listed) == ["worker0", "worker1", "worker2"]
            assert {info.pid for info in listed} == {c.pid for c in started}
            assert all(info.argv[0] == PY and info.started <= time.time() for info in listed)
            began = time.monotonic()
            assert await registry.terminate_all() == 3
            assert time.monotonic() - began < 5
            tg.cancel_scope.cancel()
        with pytest.raises(children.Unavailable):
            async with registry.open(sleeper):
                pass
        assert registry.list() == []
        return [c.pid for c in started], [c.returncode for c in started]

    pids, codes = anyio.run(main)
    assert all(gone(pid) for pid in pids)
    assert sorted(codes) == sorted([-signal.SIGKILL, -signal.SIGTERM, -signal.SIGTERM])  # type: ignore[type-var]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_dies_with_its_parent_even_on_kill_9(tmp_path: Path) -> None:
    """A process that uses children.open is killed with SIGKILL: its child goes too."""
    parent_code = textwrap.dedent(f"""
        import anyio, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from sidecar import children

        async def main():
            async with children.open([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
                print(child.pid, flush=True)
                await anyio.sleep(60)

        anyio.run(main)
    """)
    parent = subprocess.Popen([PY, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        assert not gone(grandchild)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while not gone(grandchild) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gone(grandchild)
    finally:
        parent.kill()
        parent.wait()
