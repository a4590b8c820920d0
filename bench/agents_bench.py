"""Agent registry figures on a generated registry of 1,000 agent files.

    .venv/bin/python bench/agents_bench.py [--agents 1000] [--rounds 2000]

Prints: full load of every file (cold: nothing cached), reload after one file changed,
the poll that notices nothing changed, search and select latency (p50 / p99 over varied
queries). Targets (issue 6): search p50 < 1 ms, select < 2 ms, full load < 300 ms, reload
after one change < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.agents.registry import Loader  # noqa: E402
from sidecar.agents.service import AgentsService  # noqa: E402

TOPICS = ("python", "rust", "sql", "kubernetes", "react", "security", "testing", "docs", "finance", "marketing",
          "legal", "design", "data", "ml", "devops", "mobile", "email", "translation", "korean", "english",
          "japanese", "spreadsheet", "statistics", "writing", "research", "sales", "support", "hiring",
          "product", "cloud", "terraform", "docker", "graphql", "api", "frontend", "backend", "database",
          "performance", "accessibility", "privacy")
ROLES = ("expert", "reviewer", "writer", "tuner", "analyst", "designer", "helper", "coach", "planner",
         "translator", "auditor", "engineer", "tutor", "summarizer", "architect")
VERBS = ("reviews", "writes", "explains", "optimizes", "debugs", "plans", "translates", "audits", "designs",
         "summarizes", "tests", "refactors", "documents", "migrates", "monitors")
NOUNS = ("queries", "pull requests", "documents", "contracts", "dashboards", "pipelines", "schemas", "emails",
         "reports", "APIs", "components", "models", "experiments", "budgets", "campaigns", "incidents")


def agent_text(rng: random.Random, i: int) -> tuple[str, str]:
    topic, topic2 = rng.sample(TOPICS, 2)
    role = rng.choice(ROLES)
    name = f"{topic}-{topic2}-{role}-{i}"
    sentences = [f"{rng.choice(VERBS).capitalize()} {topic} {rng.choice(NOUNS)} and {topic2} {rng.choice(NOUNS)}"
                 for _ in range(3)]
    description = ". ".join(sentences) + f". Use it when {topic} work needs a {role}."
    caps = ", ".join(f"{topic} {rng.choice(NOUNS)}" for _ in range(4))
    tags = ", ".join(rng.sample(TOPICS, 4))
    body = "\n".join(f"You are a {topic} {role}. " + " ".join(rng.sample(sentences, 3)) for _ in range(6))
    text = (f"---\nname: {name}\ndescription: {description}\ncategory: {topic}\n"
            f"capabilities: [{caps}]\ntags: [{tags}]\ntools: [builtin__project_file_read]\nmodel: claude-sonnet\n"
            f"version: 1.0.0\n---\n{body}\n")
    return name, text


def generate(root: Path, count: int, seed: int = 6) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        name, text = agent_text(rng, i)
        folder = root / TOPICS[i % len(TOPICS)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "agents"
        paths = generate(root, args.agents)
        service = AgentsService(lambda: [str(root)], bundled_dir=None)
        service.reload_now()  # warm the imports (yaml) once; then measure cold loads
        loads = []
        for _ in range(5):
            service._loader = Loader()
            started = time.perf_counter()
            report = service.reload_now()
            loads.append((time.perf_counter() - started) * 1000)
        assert report.count == args.agents, report
        reloads, polls = [], []
        rng = random.Random(1)
        for k in range(10):
            path = rng.choice(paths)
            text = path.read_text(encoding="utf-8").replace("version: 1.0.0", f"version: 1.0.{k + 1}")
            path.write_text(text, encoding="utf-8")
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000 * (k + 1)))
            started = time.perf_counter()
            report = service.poll_now()
            reloads.append((time.perf_counter() - started) * 1000)
            assert report is not None and report.changed, report
            started = time.perf_counter()
            assert service.poll_now() is None
            polls.append((time.perf_counter() - started) * 1000)
        queries = [" ".join(rng.sample(TOPICS + ROLES, rng.randint(1, 3))) for _ in range(200)]
        queries += ["reveiw", "pyth", "kubernets helper", "translat korean"]
        prompts = [f"I need help: my {rng.choice(TOPICS)} {rng.choice(NOUNS)} is slow and the "
                   f"{rng.choice(TOPICS)} team wants a {rng.choice(ROLES)} to look at it before Friday"
                   for _ in range(200)]
        search_ms, select_ms = [], []
        for i in range(args.rounds):
            q = queries[i % len(queries)]
            started = time.perf_counter()
            service.search(q, 10)
            search_ms.append((time.perf_counter() - started) * 1000)
            p = prompts[i % len(prompts)]
            started = time.perf_counter()
            service.select(p)
            select_ms.append((time.perf_counter() - started) * 1000)
    print(f"agents: {args.agents} generated files")
    print(f"full load (cold)        median {statistics.median(loads):7.1f} ms   (target < 300 ms)")
    print(f"reload after 1 change   median {statistics.median(reloads):7.1f} ms   max {max(reloads):.1f} ms"
          f"   (target < 50 ms)")
    print(f"poll, nothing changed   median {statistics.median(polls):7.2f} ms")
    print(f"search                  p50 {pct(search_ms, .5):.3f} ms   p99 {pct(search_ms, .99):.3f} ms"
          f"   (target p50 < 1 ms)")
    print(f"select                  p50 {pct(select_ms, .5):.3f} ms   p99 {pct(select_ms, .99):.3f} ms"
          f"   (target < 2 ms)")


if __name__ == "__main__":
    main()
