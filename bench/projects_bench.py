"""Projects/conversations figures on a real database file.

    .venv/bin/python bench/projects_bench.py [--messages 100000] [--inserts-only]

Prints: inserting 10,000 messages one call at a time through ProjectsService (each its own
transaction, as chat writes them), beside references measured in the same run: the bare apsw
loop (BEGIN IMMEDIATE, one INSERT into a one-column table, COMMIT), the append's own
transaction run 10,000 times right on the calling thread (`Database.run_now`: its SQL and
commit, no hand-off to the writer thread), and the same appends with every write on the writer
thread (before small writes ran on the loop) and through the hand-off `Database.write` made
before that (anyio's thread pool behind `commit_rule()`); then indexing them (messages reach the full-text indexes
in batches: a search, or the background indexer, indexes what is queued); a streamed reply
(begin, checkpoints, finish); `projects/get` and `conversations/get` of a project with
1,000 messages, and `conversations/search` p50/p99 over a generated corpus of English and
Korean messages. Targets (issue 6): get with 1,000 messages < 5 ms, search over 100,000
messages p50 < 10 ms, insert 10,000 messages < 2 s.

An unscoped search ranks at most `store.RANK_CANDIDATES` (the newest) of its matches; the
last line prints the same queries ranked over every match, what a search cost before.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.projects import TextPart  # noqa: E402
from sidecar.projects import store  # noqa: E402
from sidecar.projects.service import ProjectsService, new_id  # noqa: E402
from sidecar.store.database import Database, commit_rule, connect  # noqa: E402

EN = ("database migration index query latency deploy rollback kubernetes cluster memory leak review "
      "pull request schema table column backup restore invoice customer report chart budget meeting "
      "agenda release feature flag cache eviction timeout retry queue worker python rust typescript "
      "translation summary contract clause onboarding checklist incident postmortem alert dashboard").split()
KO = ("데이터베이스를 이전하기 회의를 일정을 보고서를 번역해 주세요 고객 계약서 검토 배포 롤백 "
      "캐시 장애 회고 대시보드 예산 발표 자료 요약 문서 작성 테스트 코드 리뷰 성능 개선 쿼리가 느려요").split()
QUERIES_EN = ["database migration", "memory leak", "rollback", "invoice customer", "feature flag", "postmortem",
              "kubernetes cluster", "cache eviction", "retry queue", "onboarding"]
QUERIES_KO = ["데이터베이스", "회의", "번역", "계약서 검토", "베이스", "장애 회고", "성능 개선", "쿼리가"]


def sentence(rng: random.Random) -> str:
    words = KO if rng.random() < 0.3 else EN
    return " ".join(rng.choice(words) for _ in range(rng.randint(8, 30)))


class ToThreadDatabase(Database):
    """`Database.write` as it was before the writer thread: each write handed to anyio's
    thread pool (`to_thread.run_sync`, one thread at a time) under `commit_rule()`."""

    async def write(self, fn, *, small=False):  # type: ignore[no-untyped-def]
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            self._write_limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self._write_limiter.acquire()
        try:
            async with commit_rule():
                return await anyio.to_thread.run_sync(self._transaction, fn, abandon_on_cancel=False,
                                                      limiter=self._write_thread_limiter)
        finally:
            self._write_limiter.release()


class WriterThreadDatabase(Database):
    """`Database.write` with every write on the writer thread, small or not (what it did
    before small writes ran on the loop)."""

    async def write(self, fn, *, small=False):  # type: ignore[no-untyped-def]
        return await super().write(fn)


#: the 10,000 appends of each way are made in this many rounds, the ways taking turns, so that
#: whatever else the machine does during the run falls on all of them alike
ROUNDS = 5


class Appends:
    """One way of appending messages, on its own database file, timed round by round."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seconds = 0.0

    async def setup(self) -> None: ...

    async def run(self, texts: list[str]) -> None: ...

    async def timed(self, texts: list[str]) -> None:
        started = time.perf_counter()
        await self.run(texts)
        self.seconds += time.perf_counter() - started


class ServiceAppends(Appends):
    """`ProjectsService.append_message`, one call (one transaction) per message."""

    async def setup(self) -> None:
        self.service = ProjectsService(self.db)
        project = await self.service.create_project("insert bench")
        self.conv_id = (await self.service.create_conversation(project.id, "general-assistant", "inserts")).id

    async def run(self, texts: list[str]) -> None:
        for text in texts:
            await self.service.append_message(self.conv_id, "user", [TextPart(text)])


class InlineAppends(Appends):
    """The same appends' transactions (what `append_message` hands the writer), each run right
    on the calling thread with `run_now`: their SQL and commit alone."""

    async def setup(self) -> None:
        self.conv_id = new_id("c")
        self.db.run_now(lambda c: c.execute("INSERT INTO conversations (id, title) VALUES (?, 'inline')",
                                            (self.conv_id,)))
        self.encode = msgspec.json.Encoder()

    async def run(self, texts: list[str]) -> None:
        for text in texts:
            content = self.encode.encode([TextPart(text)]).decode()
            self.db.run_now(lambda c, content=content, text=text: store.insert_message(  # type: ignore[misc]
                c, new_id("m"), self.conv_id, "user", content, text, "", 0, 0, "complete"))


class BareInserts(Appends):
    """BEGIN IMMEDIATE / one INSERT / COMMIT per text on a one-column table, with the store's
    connection settings: the floor of a transaction per message."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        self.conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        self.seconds = 0.0

    async def run(self, texts: list[str]) -> None:
        for text in texts:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("INSERT INTO t (text) VALUES (?)", (text,))
            self.conn.execute("COMMIT")


async def insert_figures(tmp: Path, db: Database, texts: list[str]) -> dict[str, float]:
    """Seconds for `texts` appended each way, one message per transaction: through the service
    on `db` ("now"), through the service with the old `Database.write` ("old"), the same
    transactions with no hand-off ("inline"), and the bare loop ("bare"); the others each on a
    fresh database file."""
    old_db, inline_db = ToThreadDatabase(tmp / "old.db"), Database(tmp / "inline.db")
    thread_db = WriterThreadDatabase(tmp / "thread.db")
    for other in (old_db, inline_db, thread_db):
        other.open()
    ways = {"now": ServiceAppends(db), "thread": ServiceAppends(thread_db), "old": ServiceAppends(old_db),
            "inline": InlineAppends(inline_db), "bare": BareInserts(tmp / "bare.db")}
    try:
        for way in ways.values():
            await way.setup()
        step = -(-len(texts) // ROUNDS)
        for start in range(0, len(texts), step):
            for way in ways.values():
                await way.timed(texts[start:start + step])
    finally:
        for other in (old_db, inline_db, thread_db):
            other.close()
        ways["bare"].conn.close()  # type: ignore[attr-defined]
    return {name: way.seconds for name, way in ways.items()}


def print_inserts(figures: dict[str, float]) -> None:
    def line(label: str, name: str, note: str) -> None:
        print(f"{label:<44}{figures[name]:.2f} s   ({figures[name] / 10:.3f} ms each)   {note}")
    line("insert 10,000 messages, one call each", "now", "(target < 2 s)")
    print(f"  references, this run (10,000 each, in {ROUNDS} rounds taking turns):")
    line("    same, every write on the writer thread", "thread", "(no small writes on the loop)")
    line("    same, Database.write as before that", "old", "(anyio to_thread + commit_rule)")
    line("    the appends' transactions, run_now", "inline", "(SQL + commit, no hand-off)")
    line("    bare apsw insert + commit", "bare", "(one-column table)")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(total: int, inserts_only: bool) -> None:
    rng = random.Random(6)
    with tempfile.TemporaryDirectory() as tmp:
        texts = [sentence(rng) for _ in range(10_000)]
        db = Database(Path(tmp) / "bench.db")
        db.open()
        service = ProjectsService(db)
        # 1. 10,000 appends, one transaction each, beside the references
        inserts = await insert_figures(Path(tmp), db, texts)
        if inserts_only:
            db.close()
            print_inserts(inserts)
            return
        project = await service.create_project("stream bench")
        started = time.perf_counter()
        indexed = await service.index_pending()
        index_s = time.perf_counter() - started
        assert indexed == 10_000, indexed
        # a streamed reply: begin, 50 checkpoints, finish (x 200)
        conv3 = await service.create_conversation(project.id, "general-assistant", "stream")
        started = time.perf_counter()
        for i in range(200):
            mid = await service.begin_message(conv3.id, "assistant", "model")
            parts = []
            for k in range(50):
                parts = [TextPart(" ".join(texts[(i + j) % len(texts)] for j in range(k // 10 + 1)))]
                await service.update_message(mid, parts)
            await service.finish_message(mid, parts)
        stream_ms = (time.perf_counter() - started) * 1000 / (200 * 52)
        conv2 = await service.create_conversation(project.id, "general-assistant", "batch")
        started = time.perf_counter()
        await service.append_messages(conv2.id, [("user", [TextPart(text)]) for text in texts])
        batch_s = time.perf_counter() - started
        # 2. a project with 1,000 messages (in 10 conversations) and 20 files
        big = await service.create_project("get bench", "a project with a thousand messages")
        for c in range(10):
            conv_id = (await service.create_conversation(big.id, "", f"chat {c}")).id
            for _ in range(100):
                await service.append_message(conv_id, "user", [TextPart(sentence(rng))])
        for f in range(20):
            await service.put_file(big.id, f"src/file{f}.py", "print('hello')\n" * 50)
        one_conv = (await service.create_conversation(big.id, "", "long")).id
        # (a conversation of its own with 1,000 messages, for conversations/get)
        rows = [(new_id("m"), sentence(rng)) for _ in range(1000)]

        def fill(conn, conversation_id=one_conv, rows=rows):  # type: ignore[no-untyped-def]
            for mid, text in rows:
                store.insert_message(conn, mid, conversation_id, "user", "[]", text, "", 0, 0, "complete")
        await db.write(fill)
        get_ms, conv_ms = [], []
        for _ in range(200):
            started = time.perf_counter()
            await service.get_project(big.id)
            get_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await service.get_conversation(one_conv)
            conv_ms.append((time.perf_counter() - started) * 1000)
        # 3. the search corpus: fill up to `total` messages in bulk (1,000 conversations)
        remaining = total - 20_000 - 2_000
        per_conv = max(1, remaining // 1000)
        started = time.perf_counter()
        for batch in range(0, 1000, 100):
            conv_rows = []
            for _ in range(100):
                cid = new_id("c")
                conv_rows.append((cid, [(new_id("m"), sentence(rng)) for _ in range(per_conv)]))

            def bulk(conn, conv_rows=conv_rows):  # type: ignore[no-untyped-def]
                for cid, msgs in conv_rows:
                    conn.execute("INSERT INTO conversations (id, title) VALUES (?, 'generated')", (cid,))
                    conn.executemany(
                        "INSERT INTO messages (id, conversation_id, position, role, text) VALUES (?, ?, ?, 'user', ?)",
                        [(mid, cid, i, text) for i, (mid, text) in enumerate(msgs)])
            await db.write(bulk)
        fill_s = time.perf_counter() - started
        started = time.perf_counter()
        await service.index_pending()
        fill_index_s = time.perf_counter() - started
        count = await db.read(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
        search_en, search_ko = [], []
        for i in range(300):
            for queries, out in ((QUERIES_EN, search_en), (QUERIES_KO, search_ko)):
                q = queries[i % len(queries)]
                started = time.perf_counter()
                page = await service.search_messages(q, limit=20)
                out.append((time.perf_counter() - started) * 1000)
                assert page.items, q
        search_exact = []
        for i in range(100):
            for queries in (QUERIES_EN, QUERIES_KO):
                kind, match = store.fts_match(queries[i % len(queries)])
                started = time.perf_counter()
                await db.read(lambda c, kind=kind, match=match: store.search_messages(  # type: ignore[misc]
                    c, kind, match, None, 0, 21, candidates=count))
                search_exact.append((time.perf_counter() - started) * 1000)
        db.close()
    print_inserts(inserts)
    print(f"  then indexing those 10,000             {index_s:.2f} s")
    print(f"streamed reply: begin/update/finish      {stream_ms:.3f} ms per call (50 checkpoints per message)")
    print(f"insert 10,000 messages, one transaction {batch_s:.2f} s")
    print(f"projects/get, 1,000 messages + 20 files  p50 {pct(get_ms, .5):.2f} ms   p99 {pct(get_ms, .99):.2f} ms"
          f"   (target < 5 ms)")
    print(f"conversations/get, 1,000 messages        p50 {pct(conv_ms, .5):.2f} ms   p99 {pct(conv_ms, .99):.2f} ms")
    print(f"corpus: {count} messages (bulk fill {fill_s:.1f} s, indexing {fill_index_s:.1f} s)")
    print(f"conversations/search English             p50 {pct(search_en, .5):.2f} ms   "
          f"p99 {pct(search_en, .99):.2f} ms   (target p50 < 10 ms)")
    print(f"conversations/search Korean              p50 {pct(search_ko, .5):.2f} ms   "
          f"p99 {pct(search_ko, .99):.2f} ms   (target p50 < 10 ms)")
    print(f"all searches                             p50 {statistics.median(search_en + search_ko):.2f} ms   "
          f"(ranking at most {store.RANK_CANDIDATES} newest matches)")
    print(f"  the same, ranking every match (store)  p50 {statistics.median(search_exact):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--inserts-only", action="store_true", help="only the insert figure and its references")
    args = parser.parse_args()
    anyio.run(run, args.messages, args.inserts_only)


if __name__ == "__main__":
    main()
