"""agents/*: the RPC edge of AgentsService."""

from __future__ import annotations

from protocol import agents as p
from protocol.common import Empty
from sidecar.agents.parser import AgentDef
from sidecar.agents.service import AgentsService, Hit, ReloadReport
from sidecar.server.context import RequestContext
from sidecar.server.router import Router


def summary(agent: AgentDef) -> p.AgentSummary:
    return p.AgentSummary(agent.name, agent.description, agent.category, list(agent.capabilities),
                          list(agent.tags), list(agent.tools), agent.model, agent.version, agent.author,
                          agent.source)


def _hit(hit: Hit) -> p.SearchHit:
    return p.SearchHit(summary(hit.agent), hit.score, list(hit.matched))


def changed_event(report: ReloadReport) -> p.AgentsChanged:
    return p.AgentsChanged(report.count, report.problems, list(report.added), list(report.removed),
                           list(report.changed))


def register(router: Router, service: AgentsService) -> None:
    # reads of the in-memory snapshot answer in microseconds: inline
    @router.method(p.LIST, inline=True)
    def list_(ctx: RequestContext, params: p.AgentsListParams) -> p.AgentsListResult:
        agents, cursor = service.list(params.category, params.tag, params.cursor, params.limit)
        return p.AgentsListResult([summary(a) for a in agents], cursor)

    @router.method(p.GET, inline=True)
    def get(ctx: RequestContext, params: p.AgentsGetParams) -> p.Agent:
        entry = service.get(params.name)
        a = entry.agent
        return p.Agent(a.name, a.description, a.prompt, a.path, a.source, a.category, list(a.capabilities),
                       list(a.tags), list(a.tools), a.model, a.version, a.author, dict(a.extra), list(entry.shadows))

    @router.method(p.SEARCH, inline=True)
    def search(ctx: RequestContext, params: p.AgentsSearchParams) -> p.AgentsSearchResult:
        return p.AgentsSearchResult([_hit(h) for h in service.search(params.query, params.limit)])

    @router.method(p.CATEGORIES, inline=True)
    def categories(ctx: RequestContext, params: Empty) -> p.AgentsCategoriesResult:
        return p.AgentsCategoriesResult([p.CategoryCount(name, n) for name, n in service.categories()])

    @router.method(p.SELECT)  # a prompt may be long: a worker thread
    def select(ctx: RequestContext, params: p.AgentsSelectParams) -> p.AgentsSelectResult:
        s = service.select(params.prompt)
        return p.AgentsSelectResult(summary(s.agent), s.score, s.reason, [_hit(h) for h in s.alternatives],
                                    s.fallback)

    @router.method(p.RELOAD)
    async def reload(ctx: RequestContext, params: Empty) -> p.AgentsReloadResult:
        r = await service.reload()
        return p.AgentsReloadResult(r.count, r.problems, list(r.added), list(r.removed), list(r.changed),
                                    r.duration_ms)

    @router.method(p.PROBLEMS, inline=True)
    def problems(ctx: RequestContext, params: Empty) -> p.AgentsProblemsResult:
        return p.AgentsProblemsResult([p.AgentProblem(x.file, x.reason, x.line) for x in service.problems()])
