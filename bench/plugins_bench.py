"""Plugin call costs, side by side with a bare wasmtime-py call in the same run.

    python bench/plugins_bench.py [--n 2000]

Prints µs per operation: a bare wasmtime-py call on one kept instance (the floor), a bare
instantiate from InstancePre, the sandboxed call as the service makes it (fresh Store,
WASI, limits, fresh instance, 1 KB JSON in and out) with and without fuel metering, and a
cold load of a compiled module from the on-disk cache. Then the whole `PluginService.call`
(schema validation, the hop to a worker thread and back, stats) for the echo module and
the text-tools example (and, as a breakdown, the input check it makes), beside the bare cost of an `anyio.to_thread` hop in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import wasmtime  # noqa: E402

from protocol.plugins import Permissions  # noqa: E402
from sidecar.plugins import host, runtime  # noqa: E402

WAT = (ROOT / "tests/plugins_wat/echo.wat").read_text().replace(
    "(;prelude;)", (ROOT / "tests/plugins_wat/prelude.wat").read_text())
PAYLOAD = b'{"tool":"run","input":{"text":"' + b"x" * 1000 + b'"}}'


def per_op(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(min(200, n)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    wasm = wasmtime.wat2wasm(WAT)
    with tempfile.TemporaryDirectory() as tmp:
        eng = runtime.WasmEngine(Path(tmp) / "cache", host.define)
        stop = threading.Event()
        threading.Thread(target=lambda: [eng.tick() for _ in iter(lambda: stop.wait(0.01), True)],
                         daemon=True).start()
        program = eng.prepare(wasm)

        # the floor: one plain Engine, one kept instance, alloc + write + handle + read
        plain = wasmtime.Engine()
        store = wasmtime.Store(plain)
        inst = wasmtime.Instance(store, wasmtime.Module(plain, wasm), [])
        ex = inst.exports(store)
        mem, alloc, handle = ex["memory"], ex["alloc"], ex["handle"]

        def bare() -> None:
            ptr = alloc(store, len(PAYLOAD))
            mem.write(store, PAYLOAD, ptr)
            r = handle(store, ptr, len(PAYLOAD))
            mem.read(store, r >> 32, (r >> 32) + (r & 0xFFFFFFFF))

        linker = wasmtime.Linker(plain)
        pre = linker.instantiate_pre(wasmtime.Module(plain, wasm))

        def instantiate() -> None:
            pre.instantiate(wasmtime.Store(plain))

        limits = runtime.CallLimits(10**9, 64 << 20, 5000)
        sandbox = runtime.Sandbox(capture_dir=Path(tmp))

        def sandboxed() -> None:
            eng.call(program, PAYLOAD, limits, runtime.CallControl(5000), sandbox,
                     host.PluginCall("b", Permissions(), None, 0))  # type: ignore[arg-type]

        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        fueled = wasmtime.Engine(cfg)
        fstore = wasmtime.Store(fueled)
        fex = wasmtime.Instance(fstore, wasmtime.Module(fueled, wasm), []).exports(fstore)

        def bare_fuel() -> None:
            fstore.set_fuel(10**9)
            ptr = fex["alloc"](fstore, len(PAYLOAD))
            fex["memory"].write(fstore, PAYLOAD, ptr)
            fex["handle"](fstore, ptr, len(PAYLOAD))

        def cold() -> None:
            eng.load_module(wasm)

        def sandboxed_text_tools() -> None:
            eng.call(text_program, TEXT_PAYLOAD, limits, runtime.CallControl(5000), sandbox,
                     host.PluginCall("b", Permissions(), None, 0))  # type: ignore[arg-type]

        text_program = eng.prepare((ROOT / "plugins/text-tools/text.wasm").read_bytes())
        rows = [("bare wasmtime-py call, kept instance (floor)", per_op(bare, n)),
                ("bare call with fuel metering on", per_op(bare_fuel, n)),
                ("instantiate from InstancePre", per_op(instantiate, n)),
                ("sidecar sandboxed call, 1 KB JSON (fresh store+instance)", per_op(sandboxed, n)),
                ("  the same, text-tools wordcount (C, _initialize, 1 KB)", per_op(sandboxed_text_tools, n)),
                ("cold load from the compile cache (deserialize_file)", per_op(cold, max(50, n // 20)))]
        stop.set()
    rows += asyncio.run(service_rows(n))
    for name, us in rows:
        print(f"{name:60s} {us:9.1f} µs")


TEXT_PAYLOAD = b'{"tool":"wordcount","input":{"text":"' + b"word " * 200 + b'"}}'


async def service_rows(n: int) -> list[tuple[str, float]]:
    """The whole service call, on a real database, as a handler makes it."""
    import anyio

    from sidecar.handoff import WorkerThreads
    from sidecar.notifier import Notifier
    from sidecar.plugins.service import DEFAULTS, PluginService
    from sidecar.plugins.store import PluginStore
    from sidecar.store import migrations
    from sidecar.store.database import Database

    async def per_call(call) -> float:  # type: ignore[no-untyped-def]
        for _ in range(min(200, n)):
            await call()
        start = time.perf_counter()
        for _ in range(n):
            await call()
        return (time.perf_counter() - start) / n * 1e6

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "echo"
        src.mkdir()
        (src / "main.wat").write_text(WAT)
        (src / "plugin.toml").write_text(
            'id = "echo"\nname = "echo"\nversion = "1.0.0"\nentry = "main.wat"\n[[tools]]\nname = "run"\n'
            'inputSchema = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }\n')
        db = Database(root / "sidecar.db", migrations.default_migrations_dir())
        db.open()
        settings = dict(DEFAULTS, **{"plugins.watchIntervalMs": 0})
        service = PluginService(PluginStore(db), root / "data", settings.__getitem__, Notifier())
        text = {"text": "x" * 1000}
        try:
            async with service.running():
                await service.install(str(src))
                await service.install(str(ROOT / "plugins/text-tools"))
                hop = await per_call(lambda: anyio.to_thread.run_sync(lambda: None, abandon_on_cancel=True))
                workers, loop = WorkerThreads("bench", 4), asyncio.get_running_loop()
                own_hop = await per_call(lambda: workers.run(lambda: None, loop))
                workers.close()
                echo = await per_call(lambda: service.call("echo", "run", text))
                words = await per_call(lambda: service.call("text-tools", "wordcount", {"text": "word " * 200}))
                # a breakdown: the input check a call makes, and jsonschema's walk it spares
                validator = service._loaded["echo"].validators["run"]
                check = per_op(lambda: validator.first_error(text), n)
                full = per_op(lambda: next(iter(validator.full.iter_errors(text)), None), n)
        finally:
            db.close()
    return [("anyio.to_thread hop alone (no work)", hop),
            ("sidecar.handoff hop alone (no work; what calls use)", own_hop),
            ("PluginService.call echo, 1 KB (validate, thread, stats)", echo),
            ("PluginService.call text-tools wordcount, 1 KB", words),
            ("  input check alone (compiled per tool; what calls use)", check),
            ("  jsonschema iter_errors alone (the fallback, for errors)", full)]


if __name__ == "__main__":
    main()
