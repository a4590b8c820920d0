"""projects/*, projects/files/*, conversations/*: projects group conversations and files;
conversations hold ordered messages made of content parts; full-text search over all three."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from protocol.spec import MethodSpec

QUERY_MAX_LENGTH = 1000
PAGE_MAX = 200

Id = Annotated[str, Meta(min_length=1, max_length=100)]
Name = Annotated[str, Meta(min_length=1, max_length=500)]
Limit = Annotated[int, Meta(ge=1, le=PAGE_MAX)]
Query = Annotated[str, Meta(max_length=QUERY_MAX_LENGTH,
                            description="Words to find (any characters: they are matched literally); not empty.")]
FilePath = Annotated[str, Meta(min_length=1, max_length=1024,
                               description="A relative path like src/main.py: no '..', not absolute, no NUL.")]


# ---- content parts (a tagged union on "type") -------------------------------------------------------

class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ToolCallPart(msgspec.Struct, tag="toolCall", tag_field="type"):
    id: str
    name: str
    arguments: Any = None


class ToolResultPart(msgspec.Struct, tag="toolResult", tag_field="type", omit_defaults=True):
    toolCallId: str
    content: str = ""
    isError: bool = False


ContentPart = TextPart | ToolCallPart | ToolResultPart
Role = Literal["system", "user", "assistant", "tool"]
MessageStatus = Literal["streaming", "complete", "cancelled", "error", "incomplete"]


class Usage(msgspec.Struct):
    inputTokens: Annotated[int, Meta(ge=0)] = 0
    outputTokens: Annotated[int, Meta(ge=0)] = 0


# ---- projects ------------------------------------------------------------------------------------

class Project(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    description: str
    type: str
    activeAgents: list[str]
    createdAt: str
    updatedAt: str
    forkedFrom: str | None = None


class FileMeta(msgspec.Struct, omit_defaults=True):
    path: str
    size: int
    sha256: str
    #: "text" (UTF-8) or "binary"
    kind: str
    language: str
    updatedAt: str


class ConversationSummary(msgspec.Struct, omit_defaults=True):
    id: str
    agent: str
    title: str
    messageCount: int
    createdAt: str
    updatedAt: str
    projectId: str | None = None


class ProjectDetail(msgspec.Struct):
    project: Project
    files: list[FileMeta]
    conversations: list[ConversationSummary]
    totalBytes: int


class ProjectCreateParams(msgspec.Struct):
    name: Name
    description: Annotated[str, Meta(max_length=10_000)] = ""
    type: Annotated[str, Meta(max_length=100)] = "general"
    activeAgents: list[str] = []


class ProjectIdParams(msgspec.Struct):
    id: Id


class ProjectUpdateParams(msgspec.Struct, omit_defaults=True):
    id: Id
    name: Name | None = None
    description: Annotated[str, Meta(max_length=10_000)] | None = None
    type: Annotated[str, Meta(max_length=100)] | None = None
    activeAgents: list[str] | None = None


class PageParams(msgspec.Struct, omit_defaults=True):
    cursor: str | None = None
    limit: Limit = 50


class ProjectListResult(msgspec.Struct):
    projects: list[Project]
    nextCursor: str | None = None


class Deleted(msgspec.Struct):
    id: str
    deleted: bool = True


class HighlightPart(msgspec.Struct, omit_defaults=True):
    """A piece of a snippet; `match` marks the words that matched."""

    text: str
    match: bool = False


class SearchParams(msgspec.Struct, omit_defaults=True):
    query: Query
    cursor: str | None = None
    limit: Limit = 20


class ProjectHit(msgspec.Struct):
    project: Project
    snippet: list[HighlightPart]


class ProjectSearchResult(msgspec.Struct):
    results: list[ProjectHit]
    nextCursor: str | None = None


class ProjectForkParams(msgspec.Struct, omit_defaults=True):
    id: Id
    name: Name | None = None
    includeConversations: bool = False


class FileContent(msgspec.Struct, omit_defaults=True):
    """A file's content: `text` (UTF-8) or `base64` (any bytes), exactly one."""

    path: FilePath
    text: str | None = None
    base64: str | None = None


class ProjectSaveParams(msgspec.Struct):
    id: Id
    files: list[FileContent]


class ProjectSaveResult(msgspec.Struct):
    files: list[FileMeta]
    totalBytes: int
    removed: list[str]


# ---- files ---------------------------------------------------------------------------------------

class FilePutParams(msgspec.Struct, omit_defaults=True):
    projectId: Id
    path: FilePath
    text: str | None = None
    base64: str | None = None


class FilePathParams(msgspec.Struct):
    projectId: Id
    path: FilePath


class FileGetResult(msgspec.Struct, omit_defaults=True):
    file: FileMeta
    text: str | None = None
    base64: str | None = None


class FileListParams(msgspec.Struct, omit_defaults=True):
    projectId: Id
    prefix: str = ""
    cursor: str | None = None
    limit: Limit = 200


class FileListResult(msgspec.Struct):
    files: list[FileMeta]
    nextCursor: str | None = None


class FileDeleteResult(msgspec.Struct):
    path: str
    deleted: bool = True


class FileSearchParams(msgspec.Struct, omit_defaults=True):
    query: Query
    projectId: Id | None = None
    cursor: str | None = None
    limit: Limit = 20


class FileHit(msgspec.Struct):
    projectId: str
    file: FileMeta
    snippet: list[HighlightPart]


class FileSearchResult(msgspec.Struct):
    results: list[FileHit]
    nextCursor: str | None = None


# ---- conversations -------------------------------------------------------------------------------

class Message(msgspec.Struct, omit_defaults=True):
    id: str
    position: int
    role: str
    content: list[ContentPart]
    status: str
    usage: Usage
    createdAt: str
    updatedAt: str
    model: str = ""
    error: str | None = None


class Conversation(msgspec.Struct, omit_defaults=True):
    id: str
    agent: str
    title: str
    createdAt: str
    updatedAt: str
    messages: list[Message]
    projectId: str | None = None
    #: more messages follow: ask again with `afterPosition` = the last position
    hasMore: bool = False


class ConversationCreateParams(msgspec.Struct, omit_defaults=True):
    projectId: Id | None = None
    agent: Annotated[str, Meta(max_length=200)] = ""
    title: Annotated[str, Meta(max_length=500)] = ""


class ConversationGetParams(msgspec.Struct, omit_defaults=True):
    id: Id
    afterPosition: int = -1
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000


class ConversationListParams(msgspec.Struct, omit_defaults=True):
    #: only this project's; leave out for every conversation
    projectId: Id | None = None
    #: only conversations in no project
    unassigned: bool = False
    cursor: str | None = None
    limit: Limit = 50


class ConversationListResult(msgspec.Struct):
    conversations: list[ConversationSummary]
    nextCursor: str | None = None


class ConversationRenameParams(msgspec.Struct):
    id: Id
    title: Annotated[str, Meta(max_length=500)]


class ConversationAppendParams(msgspec.Struct, omit_defaults=True):
    conversationId: Id
    role: Role
    content: list[ContentPart]
    model: Annotated[str, Meta(max_length=200)] = ""
    usage: Usage | None = None


class ConversationSearchParams(msgspec.Struct, omit_defaults=True):
    query: Query
    projectId: Id | None = None
    cursor: str | None = None
    limit: Limit = 20


class MessageHit(msgspec.Struct, omit_defaults=True):
    conversationId: str
    conversationTitle: str
    messageId: str
    position: int
    role: str
    createdAt: str
    snippet: list[HighlightPart]
    projectId: str | None = None


class ConversationSearchResult(msgspec.Struct):
    results: list[MessageHit]
    nextCursor: str | None = None


L = "projects"  # the lane: writes and the reads that must see them run in order

P_CREATE = MethodSpec("projects/create", ProjectCreateParams, Project, "Create a project.", lane=L)
P_GET = MethodSpec("projects/get", ProjectIdParams, ProjectDetail,
                   "A project with its files (metadata) and conversations (with message counts).", lane=L)
P_LIST = MethodSpec("projects/list", PageParams, ProjectListResult, "Projects, most recently updated first.",
                    lane=L)
P_UPDATE = MethodSpec("projects/update", ProjectUpdateParams, Project, "Change a project's fields.", lane=L)
P_DELETE = MethodSpec("projects/delete", ProjectIdParams, Deleted,
                      "Delete a project with its conversations, messages and files, in one transaction.", lane=L)
P_SEARCH = MethodSpec("projects/search", SearchParams, ProjectSearchResult,
                      "Projects whose name or description match, best first, with a highlighted snippet.", lane=L)
P_FORK = MethodSpec("projects/fork", ProjectForkParams, ProjectDetail,
                    "Copy a project with its files (and, if asked, its conversations).", lane=L)
P_SAVE = MethodSpec("projects/save", ProjectSaveParams, ProjectSaveResult,
                    "Replace a project's files with these, in one transaction.", lane=L)
F_PUT = MethodSpec("projects/files/put", FilePutParams, FileMeta,
                   "Write a file (text or base64); limited per file and per project by settings.", lane=L)
F_GET = MethodSpec("projects/files/get", FilePathParams, FileGetResult, "A file's content.", lane=L)
F_LIST = MethodSpec("projects/files/list", FileListParams, FileListResult, "A project's files by path.", lane=L)
F_DELETE = MethodSpec("projects/files/delete", FilePathParams, FileDeleteResult, "Delete a file.", lane=L)
F_SEARCH = MethodSpec("projects/files/search", FileSearchParams, FileSearchResult,
                      "Text files whose path or content match, with a highlighted snippet.", lane=L)
C_CREATE = MethodSpec("conversations/create", ConversationCreateParams, ConversationSummary,
                      "Start a conversation, in a project or in none.", lane=L)
C_GET = MethodSpec("conversations/get", ConversationGetParams, Conversation,
                   "A conversation with its messages in order (a page of them).", lane=L)
C_LIST = MethodSpec("conversations/list", ConversationListParams, ConversationListResult,
                    "Conversations, most recently updated first.", lane=L)
C_DELETE = MethodSpec("conversations/delete", ProjectIdParams, Deleted,
                      "Delete a conversation and its messages.", lane=L)
C_RENAME = MethodSpec("conversations/rename", ConversationRenameParams, ConversationSummary,
                      "Change a conversation's title.", lane=L)
C_APPEND = MethodSpec("conversations/append", ConversationAppendParams, Message,
                      "Add a complete message at the end of a conversation (chat streams add theirs itself).",
                      lane=L)
C_SEARCH = MethodSpec("conversations/search", ConversationSearchParams, ConversationSearchResult,
                      "Messages whose text matches (English words, Korean by substring), best first.", lane=L)

METHODS = (P_CREATE, P_GET, P_LIST, P_UPDATE, P_DELETE, P_SEARCH, P_FORK, P_SAVE,
           F_PUT, F_GET, F_LIST, F_DELETE, F_SEARCH,
           C_CREATE, C_GET, C_LIST, C_DELETE, C_RENAME, C_APPEND, C_SEARCH)
NOTIFICATIONS = ()
