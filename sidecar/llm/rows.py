"""The rows that open a chat turn, written in ONE transaction: a new conversation (when the turn
starts one), the user's message, and the "streaming" reply row the answer is stored into.

One transaction, not three, for two reasons:
- a failure (an unknown project or conversation, a constraint, the store closed) leaves nothing
  behind: no empty conversation without its message, no user message without its reply;
- it runs while the first provider request goes out (sidecar/llm/chat.py), and every write is a
  hop to the writer thread that competes with the event loop sending that request: one hop
  instead of three took ~0.4 ms off the first token (bench/chat_bench.py).

It uses the projects store's statement functions (SQL stays in sidecar/projects/store.py) and
the same ids, encodings and errors as ProjectsService; its message writes are the ones
`append_message` + `begin_message` make. The user's message is indexed for search when the
turn's reply is finished (`finish_message` wakes the indexer) or by the next search.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apsw
import msgspec

from protocol.projects import TextPart
from sidecar.errors import Conflict, NotFound, SidecarError, Unavailable

if TYPE_CHECKING:
    from sidecar.projects.service import ProjectsService

log = logging.getLogger("sidecar.llm")
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Opened:
    conversation_id: str
    message_id: str


async def open_turn(projects: ProjectsService, *, conversation_id: str | None, project_id: str | None, agent: str,
                    title: str, message: str, model: str) -> Opened:
    """Write the opening rows; `conversation_id` None starts a conversation (in `project_id`).
    Raises a typed error naming what failed; nothing is written then."""
    from sidecar.projects import store
    from sidecar.projects.service import new_id, parts_text

    parts = [TextPart(message)]
    content = _encode(parts).decode()
    text = parts_text(parts)
    reply_id = new_id("m")

    def run(conn: apsw.Connection) -> Opened:
        cid = conversation_id
        if cid is None:
            if project_id is not None and store.get_project(conn, project_id) is None:
                raise NotFound(f"no project {project_id}", id=project_id, projectId=project_id)
            cid = store.insert_conversation(conn, new_id("c"), project_id, agent, title).id
        if store.insert_message(conn, new_id("m"), cid, "user", content, text, "", 0, 0, "complete") is None:
            raise NotFound(f"no conversation {cid}", id=cid, conversationId=cid)
        store.insert_message(conn, reply_id, cid, "assistant", "[]", "", model, 0, 0, "streaming")
        return Opened(cid, reply_id)

    try:
        return await projects.db.write(run)
    except SidecarError:
        raise
    except apsw.ConstraintError as exc:
        log.warning("chat: the turn's rows broke a constraint: %s", exc)
        raise Conflict("the conversation could not be stored: the database refused the turn's rows "
                       "(a constraint failed)", conversationId=conversation_id) from exc
    except Exception as exc:  # noqa: BLE001 - the store closed, the disk full...: typed, and logged
        log.warning("chat: the turn's rows could not be written", exc_info=True)
        raise Unavailable(f"the conversation could not be stored ({type(exc).__name__}); nothing was kept",
                          conversationId=conversation_id) from exc
