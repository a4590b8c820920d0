"""projects/*, projects/files/*, conversations/*: the RPC edge of ProjectsService."""

from __future__ import annotations

import base64

import msgspec

from protocol import projects as p
from sidecar.projects.service import ProjectDetail, ProjectsService, decode_parts, split_snippet
from sidecar.projects.store import ConversationRow, FileRow, MessageRow, ProjectRow
from sidecar.server.context import RequestContext
from sidecar.server.router import Router

_AGENTS = msgspec.json.Decoder(list[str])


def project(r: ProjectRow) -> p.Project:
    return p.Project(r.id, r.name, r.description, r.project_type, _AGENTS.decode(r.active_agents), r.created_at,
                     r.updated_at, r.forked_from)


def file_meta(r: FileRow) -> p.FileMeta:
    return p.FileMeta(r.path, r.size, r.sha256, "text" if r.is_text else "binary", r.language, r.updated_at)


def conversation(r: ConversationRow) -> p.ConversationSummary:
    return p.ConversationSummary(r.id, r.agent, r.title, r.message_count, r.created_at, r.updated_at, r.project_id)


def message(r: MessageRow) -> p.Message:
    return p.Message(r.id, r.position, r.role, decode_parts(r.content), r.status,
                     p.Usage(r.input_tokens, r.output_tokens), r.created_at, r.updated_at, r.model, r.error)


def detail(d: ProjectDetail) -> p.ProjectDetail:
    return p.ProjectDetail(project(d.project), [file_meta(f) for f in d.files],
                           [conversation(c) for c in d.conversations], d.total_bytes)


def snippet(text: str) -> list[p.HighlightPart]:
    return [p.HighlightPart(chunk, hit) for chunk, hit in split_snippet(text)]


def register(router: Router, service: ProjectsService) -> None:
    @router.method(p.P_CREATE)
    async def create(ctx: RequestContext, params: p.ProjectCreateParams) -> p.Project:
        return project(await service.create_project(params.name, params.description, params.type,
                                                    params.activeAgents))

    @router.method(p.P_GET)
    async def get(ctx: RequestContext, params: p.ProjectIdParams) -> p.ProjectDetail:
        return detail(await service.get_project(params.id))

    @router.method(p.P_LIST)
    async def list_(ctx: RequestContext, params: p.PageParams) -> p.ProjectListResult:
        page = await service.list_projects(params.cursor, params.limit)
        return p.ProjectListResult([project(r) for r in page.items], page.next_cursor)

    @router.method(p.P_UPDATE)
    async def update(ctx: RequestContext, params: p.ProjectUpdateParams) -> p.Project:
        return project(await service.update_project(params.id, params.name, params.description, params.type,
                                                    params.activeAgents))

    @router.method(p.P_DELETE)
    async def delete(ctx: RequestContext, params: p.ProjectIdParams) -> p.Deleted:
        await service.delete_project(params.id)
        return p.Deleted(params.id)

    @router.method(p.P_SEARCH)
    async def search(ctx: RequestContext, params: p.SearchParams) -> p.ProjectSearchResult:
        page = await service.search_projects(params.query, params.cursor, params.limit)
        return p.ProjectSearchResult([p.ProjectHit(project(r), snippet(s)) for r, s in page.items], page.next_cursor)

    @router.method(p.P_FORK)
    async def fork(ctx: RequestContext, params: p.ProjectForkParams) -> p.ProjectDetail:
        return detail(await service.fork_project(params.id, params.name, params.includeConversations))

    @router.method(p.P_SAVE)
    async def save(ctx: RequestContext, params: p.ProjectSaveParams) -> p.ProjectSaveResult:
        files, removed = await service.save_project(params.id, [(f.path, f.text, f.base64) for f in params.files])
        return p.ProjectSaveResult([file_meta(f) for f in files], sum(f.size for f in files), removed)

    @router.method(p.F_PUT)
    async def file_put(ctx: RequestContext, params: p.FilePutParams) -> p.FileMeta:
        return file_meta(await service.put_file(params.projectId, params.path, params.text, params.base64))

    @router.method(p.F_GET)
    async def file_get(ctx: RequestContext, params: p.FilePathParams) -> p.FileGetResult:
        row, text, data = await service.get_file(params.projectId, params.path)
        b64 = base64.b64encode(data).decode() if data is not None else None
        return p.FileGetResult(file_meta(row), text, b64)

    @router.method(p.F_LIST)
    async def file_list(ctx: RequestContext, params: p.FileListParams) -> p.FileListResult:
        page = await service.list_files(params.projectId, params.prefix, params.cursor, params.limit)
        return p.FileListResult([file_meta(f) for f in page.items], page.next_cursor)

    @router.method(p.F_DELETE)
    async def file_delete(ctx: RequestContext, params: p.FilePathParams) -> p.FileDeleteResult:
        await service.delete_file(params.projectId, params.path)
        return p.FileDeleteResult(params.path)

    @router.method(p.F_SEARCH)
    async def file_search(ctx: RequestContext, params: p.FileSearchParams) -> p.FileSearchResult:
        page = await service.search_files(params.query, params.projectId, params.cursor, params.limit)
        return p.FileSearchResult([p.FileHit(f.project_id, file_meta(f), snippet(s)) for f, s in page.items],
                                  page.next_cursor)

    @router.method(p.C_CREATE)
    async def c_create(ctx: RequestContext, params: p.ConversationCreateParams) -> p.ConversationSummary:
        return conversation(await service.create_conversation(params.projectId, params.agent, params.title))

    @router.method(p.C_GET)
    async def c_get(ctx: RequestContext, params: p.ConversationGetParams) -> p.Conversation:
        c, messages, more = await service.get_conversation(params.id, params.afterPosition, params.limit)
        return p.Conversation(c.id, c.agent, c.title, c.created_at, c.updated_at, [message(m) for m in messages],
                              c.project_id, more)

    @router.method(p.C_LIST)
    async def c_list(ctx: RequestContext, params: p.ConversationListParams) -> p.ConversationListResult:
        page = await service.list_conversations(params.projectId, params.unassigned, params.cursor, params.limit)
        return p.ConversationListResult([conversation(c) for c in page.items], page.next_cursor)

    @router.method(p.C_DELETE)
    async def c_delete(ctx: RequestContext, params: p.ProjectIdParams) -> p.Deleted:
        await service.delete_conversation(params.id)
        return p.Deleted(params.id)

    @router.method(p.C_RENAME)
    async def c_rename(ctx: RequestContext, params: p.ConversationRenameParams) -> p.ConversationSummary:
        return conversation(await service.rename_conversation(params.id, params.title))

    @router.method(p.C_APPEND)
    async def c_append(ctx: RequestContext, params: p.ConversationAppendParams) -> p.Message:
        return message(await service.append_message(params.conversationId, params.role, params.content,
                                                    params.model, params.usage))

    @router.method(p.C_SEARCH)
    async def c_search(ctx: RequestContext, params: p.ConversationSearchParams) -> p.ConversationSearchResult:
        page = await service.search_messages(params.query, params.projectId, params.cursor, params.limit)
        return p.ConversationSearchResult(
            [p.MessageHit(cid, title or "", mid, pos, role, created, snippet(s), pid)
             for mid, cid, title, pid, pos, role, created, s in page.items], page.next_cursor)
