"""Routing an understood command to the capability that does it, through its service.

Skills are agents (a chat turn through ChatService) and plugin tools (the ToolRegistry);
recipes are workflows (WorkflowService); schedules go to SchedulerService; "send message"
goes to the conversation's agent chat; "open" and "switch mode" notify the shell
(`voice/open`); search covers conversations (ProjectsService) and agents (AgentsService).
A target whose capability is not in this build answers `unavailable`, never a fake success.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.capability import Platform
from sidecar.errors import NotFound, SidecarError
from sidecar.voice import intents as it

log = logging.getLogger("sidecar.voice")


@dataclass(slots=True)
class Outcome:
    status: str
    target: str = "none"
    name: str | None = None
    detail: Any = None
    error: str | None = None
    reply: str = ""
    #: conversation state changes the service applies
    chat_conversation_id: str | None = None
    agent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: what a yes/no answer sounds like, as a speech-to-text prompt (when a confirmation is pending)
ANSWERS = {"en": "Yes. No. Cancel.", "ko": "네, 아니요, 취소."}


def answers_prompt(language: str | None) -> str:
    return ANSWERS["ko" if language == "ko" else "en"]


class Router:
    def __init__(self, platform: Platform, open_shell: Callable[[str, str, str | None], None]) -> None:
        self.platform = platform
        self._open = open_shell

    # ---- the names a slot is matched against ----------------------------------------------------------

    async def names(self, kind: str) -> tuple[list[str], dict[str, tuple[str, ...]]] | None:
        """The live names of a kind (and spoken aliases); None when no capability of this
        build has that kind of thing (routing then says "unavailable")."""
        if kind == "feature":
            return list(it.FEATURES), it.FEATURES
        if kind == "mode":
            return list(it.MODES), it.MODES
        if kind == "skill":
            names: list[str] = []
            agents = self.platform.find_named("sidecar.agents.service", "AgentsService")
            if agents is not None:
                names.extend(agents.ensure_loaded().names)
            try:
                names.extend(t.name for t in await self.platform.tools.list_tools())
            except SidecarError as exc:
                log.info("tools unavailable for voice names: %s", exc.message)
            return names, {}
        if kind == "recipe":
            wf = self.platform.find_named("sidecar.workflows.service", "WorkflowService")
            if wf is None:
                return None
            listing = await wf.list()
            aliases = {s.id: (s.name,) for s in listing.workflows if s.name}
            return [s.id for s in listing.workflows], aliases
        return None

    async def prompt(self, limit: int = 300, language: str | None = None) -> str:
        """The speech-to-text prompt: the live names in the sentences they are spoken in
        ("Run the daily backup recipe. Execute the data processing skill. Open settings."),
        recipes and tools first (few, and the likeliest to be misheard), then agents, up to
        `limit` characters. Whole sentences helped tiny.en far more than a bare name list:
        "execute data processing skill" came back as "execute today the processing skill"
        with names alone, right with sentences. But a long prompt hijacks tiny.en: at 700
        characters (the old limit, filled with "Ask the ... agent." lines from the built-in
        agents) "execute data processing skill" came back "Ask the code user agent. Ask the
        process skill." and a spoken "yes" as "Ask the user agent." over and over, with the
        full 30-s context too; at 300 characters 19 of 20 test commands were right.

        Korean decoding gets Korean sentences without the agents: English ones pulled the
        multilingual base model into English (a spoken "네" came back "Create a new account.")."""
        ko = language == "ko"
        # (Korean: the answers first. At the end of the prompt a spoken "아니요" came back "네."
        # from espeak-ng's voice, a no heard as a yes; first, it never did: docs/voice.md)
        sentences: list[str] = [ANSWERS["ko"]] if ko else []
        recipes = await self.names("recipe")
        if recipes is not None:
            for wf_id in recipes[0]:
                spoken = (recipes[1].get(wf_id) or (it._spoken(wf_id),))[0]
                sentences.append(f"{spoken} 레시피 실행해 줘." if ko else f"Run the {spoken} recipe.")
        try:
            sentences.extend((f"{it._spoken(t.name)} 스킬 실행해 줘." if ko else f"Execute the {it._spoken(t.name)} skill.")
                             for t in await self.platform.tools.list_tools())
        except SidecarError as exc:
            log.info("tools unavailable for voice names: %s", exc.message)
        sentences.extend(("설정 열어 줘.", "검색해 줘.", "메시지 보내 줘.") if ko else
                         ("Open settings.", "Open projects.", "Search for", "Send a message."))
        agents = self.platform.find_named("sidecar.agents.service", "AgentsService")
        if agents is not None and not ko:  # (in Korean, "네" came back as "blog writer 에이전트에게 물어봐.")
            sentences.extend(f"Ask the {it._spoken(n)} agent." for n in agents.ensure_loaded().names)
        out, size = [], 0
        for sentence in dict.fromkeys(sentences):
            if size + len(sentence) + 1 > limit:
                break
            out.append(sentence)
            size += len(sentence) + 1
        return " ".join(out)

    # ---- execution ------------------------------------------------------------------------------------

    async def execute(self, intent: str, slots: dict[str, Any], *, text: str, language: str,
                      conversation_id: str, agent: str | None, chat_conversation_id: str | None) -> Outcome:
        handler: Callable[..., Awaitable[Outcome]] | None = getattr(self, f"_do_{intent}", None)
        if handler is None:
            return Outcome("unavailable", error=f"nothing handles the intent {intent}",
                           reply=_say(language, f"I understood {intent}, but nothing here can do it.",
                                      f"{intent} 명령을 처리할 수 있는 기능이 없습니다."))
        try:
            return await handler(slots, text=text, language=language, conversation_id=conversation_id,
                                 agent=agent, chat_conversation_id=chat_conversation_id)
        except SidecarError as exc:
            return Outcome("failed", slots.get("_target", "none"), slots.get("_name"), error=exc.message,
                           reply=_say(language, f"That failed: {exc.message}", f"실패했습니다: {exc.message}"))

    async def _do_ExecuteSkill(self, slots: dict[str, Any], *, text: str, language: str, **kw: Any) -> Outcome:
        name = slots["skill"]
        if "__" in name:  # a plugin tool
            from sidecar.toolsource import ToolCall

            slots["_target"], slots["_name"] = "tool", name
            result = await self.platform.tools.call(name, dict(slots.get("arguments") or {}), ToolCall(caller="user"))
            status = "failed" if result.is_error else "executed"
            return Outcome(status, "tool", name, {"content": result.content, "isError": result.is_error},
                           reply=_say(language, f"Ran the {it._spoken(name)} tool.", f"{it._spoken(name)} 도구를 실행했습니다.")
                           if status == "executed" else _say(language, f"The {it._spoken(name)} tool reported an error.",
                                                             f"{it._spoken(name)} 도구가 오류를 보고했습니다."))
        return await self._chat(name, text, language, kw.get("chat_conversation_id") if kw.get("agent") == name else None,
                                target="agent")

    async def _chat(self, agent: str, message: str, language: str, chat_conversation_id: str | None,
                    target: str = "chat") -> Outcome:
        chat = self.platform.find_named("sidecar.llm.chat", "ChatService")
        if chat is None:
            return Outcome("unavailable", target, agent, error="chat is not in this build",
                           reply=_say(language, f"I can't talk to {it._spoken(agent)}: chat is not available here.",
                                      f"{it._spoken(agent)}에게 보낼 수 없습니다: 채팅 기능이 없습니다."))
        from protocol.llm import ChatSendParams

        async def ignore(_: Any) -> None:
            return None

        async def send(conversation_id: str | None) -> Any:
            return await chat.send(ChatSendParams(message=message, agent=agent, conversationId=conversation_id),
                                   ignore)

        try:
            try:
                result = await send(chat_conversation_id)
            except NotFound as exc:
                if chat_conversation_id is None or (exc.details or {}).get("id") != chat_conversation_id:
                    raise
                # the chat conversation this voice conversation continued was deleted (chat raises
                # before any provider request). The voice conversation's chat id is only ever
                # replaced, never cleared (store.update_state), so without this every later message
                # in it failed with "no conversation ...": start a new chat conversation instead.
                log.info("voice: chat conversation %s is gone; starting a new one", chat_conversation_id)
                chat_conversation_id = None
                result = await send(None)
        except SidecarError as exc:
            # answered here, not by execute()'s catch-all: that one knows only the `_target` slot,
            # which the chat routes never set, so a failed turn said target "none" and no agent.
            # A failed first turn may still have stored its chat conversation (ChatService names
            # it in the error): the voice conversation keeps it, so the next message continues it
            stored = (exc.details or {}).get("conversationId") or chat_conversation_id
            detail = {"kind": exc.kind, **({"conversationId": stored} if stored else {})}
            return Outcome("failed", target, agent, detail, error=exc.message,
                           reply=_say(language, f"That failed: {exc.message}", f"실패했습니다: {exc.message}"),
                           chat_conversation_id=stored, agent=agent if stored else None)
        return Outcome("executed", target, agent, {"conversationId": result.conversationId, "text": result.text,
                                                   "messageId": result.messageId},
                       reply=result.text or _say(language, "Done.", "완료했습니다."),
                       chat_conversation_id=result.conversationId, agent=agent)

    async def _do_RunRecipe(self, slots: dict[str, Any], *, language: str, **kw: Any) -> Outcome:
        wf = self.platform.find_named("sidecar.workflows.service", "WorkflowService")
        name = slots["recipe"]
        if wf is None:
            return Outcome("unavailable", "workflow", name, error="workflows are not in this build",
                           reply=_say(language, "Recipes are not available here.", "레시피 기능이 없습니다."))
        slots["_target"], slots["_name"] = "workflow", name
        result = await wf.run_workflow(name, dict(slots.get("inputs") or {}))
        ok = result.status == "succeeded"
        return Outcome("executed" if ok else "failed", "workflow", name,
                       {"runId": result.runId, "status": result.status, "outputs": result.outputs},
                       error=None if ok else str((result.error or {}).get("message", result.status)),
                       reply=_say(language, f"The {it._spoken(name)} recipe {'finished' if ok else result.status}.",
                                  f"{it._spoken(name)} 레시피를 {'실행했습니다' if ok else '실행하지 못했습니다'}."))

    async def _do_ScheduleRecipe(self, slots: dict[str, Any], *, language: str, **kw: Any) -> Outcome:
        sched = self.platform.find_named("sidecar.scheduler.service", "SchedulerService")
        name = slots["recipe"]
        if sched is None:
            return Outcome("unavailable", "schedule", name, error="the scheduler is not in this build",
                           reply=_say(language, "Scheduling is not available here.", "예약 기능이 없습니다."))
        from protocol import scheduler as s

        if "interval" in slots:
            spec, when = s.ScheduleSpec(every=str(slots["interval"])), f"every {slots['interval']}"
        else:
            hour = int(slots.get("hour", 9)) % 24
            if slots.get("ampm") == "pm" and hour < 12:
                hour += 12
            elif slots.get("ampm") == "am" and hour == 12:
                hour = 0
            spec, when = s.ScheduleSpec(cron=f"0 {hour} * * *"), f"every day at {hour}:00"
        slots["_target"], slots["_name"] = "schedule", name
        job = await sched.create(s.JobParams(name=f"voice: {name} {when}"[:200], schedule=spec,
                                             target=s.WorkflowTarget(id=name)))
        return Outcome("executed", "schedule", name, {"jobId": job.id, "schedule": when},
                       reply=_say(language, f"Scheduled the {it._spoken(name)} recipe {when}.",
                                  f"{it._spoken(name)} 레시피를 예약했습니다 ({when})."))

    async def _do_SendMessage(self, slots: dict[str, Any], *, language: str, agent: str | None,
                              chat_conversation_id: str | None, **kw: Any) -> Outcome:
        target = agent or "general-assistant"
        return await self._chat(target, str(slots["message"]), language, chat_conversation_id)

    async def _do_Ask(self, slots: dict[str, Any], *, text: str, language: str, agent: str | None,
                      chat_conversation_id: str | None, **kw: Any) -> Outcome:
        chosen = agent
        if chosen is None:
            agents = self.platform.find_named("sidecar.agents.service", "AgentsService")
            chosen = agents.select(text).agent.name if agents is not None else "general-assistant"
        return await self._chat(chosen, text, language, chat_conversation_id if chosen == agent else None)

    async def _do_OpenFeature(self, slots: dict[str, Any], *, language: str, conversation_id: str, **kw: Any) -> Outcome:
        feature = slots["feature"]
        kind = "settings" if feature == "settings" else "feature"
        self._open(kind, feature, conversation_id)
        return Outcome("executed", "open", feature, {"kind": kind},
                       reply=_say(language, f"Opening {feature}.", f"{feature} 화면을 엽니다."))

    async def _do_OpenSettings(self, slots: dict[str, Any], *, language: str, conversation_id: str, **kw: Any) -> Outcome:
        self._open("settings", "settings", conversation_id)
        return Outcome("executed", "open", "settings", {"kind": "settings"},
                       reply=_say(language, "Opening settings.", "설정을 엽니다."))

    async def _do_SwitchMode(self, slots: dict[str, Any], *, language: str, conversation_id: str, **kw: Any) -> Outcome:
        mode = slots["mode"]
        self._open("mode", mode, conversation_id)
        return Outcome("executed", "open", mode, {"kind": "mode"},
                       reply=_say(language, f"Switching to {mode} mode.", f"{mode} 모드로 전환합니다."))

    async def _do_Search(self, slots: dict[str, Any], *, language: str, **kw: Any) -> Outcome:
        query = str(slots["query"])
        detail: dict[str, Any] = {"query": query}
        projects = self.platform.find_named("sidecar.projects.service", "ProjectsService")
        agents = self.platform.find_named("sidecar.agents.service", "AgentsService")
        if projects is None and agents is None:
            return Outcome("unavailable", "search", query, error="search is not in this build",
                           reply=_say(language, "Search is not available here.", "검색 기능이 없습니다."))
        if projects is not None:
            page = await projects.search_messages(query, limit=5)
            # search_messages' items are plain rows (projects/store.py search_messages): (message id,
            # conversation id, title, project id, position, role, created_at, snippet) -- not objects
            # (the old getattr(row[0], "conversation_id") read an attribute of the message id: always None).
            # The same fields conversations/search answers with, the snippet as plain text.
            from sidecar.projects.service import split_snippet

            detail["messages"] = [
                {"conversationId": cid, "conversationTitle": title or "", "messageId": mid, "projectId": pid,
                 "position": pos, "role": role, "snippet": "".join(t for t, _ in split_snippet(snip))}
                for mid, cid, title, pid, pos, role, _created, snip in page.items]
        if agents is not None:
            detail["agents"] = [h.agent.name for h in agents.search(query, 5)]
        n = len(detail.get("messages", ())) + len(detail.get("agents", ()))
        return Outcome("executed", "search", query, detail,
                       reply=_say(language, f"Found {n} result{'s' if n != 1 else ''} for {query}.",
                                  f"{query} 검색 결과 {n}건입니다."))

    async def _do_Stop(self, slots: dict[str, Any], *, language: str, **kw: Any) -> Outcome:
        return Outcome("executed", "stop", None, reply=_say(language, "Stopped.", "멈췄습니다."))


def _say(language: str, en: str, ko: str) -> str:
    return ko if language == "ko" else en
