"""The workflows capability: workflow documents, the engine that runs them durably, and
workflows/*. Its lifespan owns the runs' task group: runs outlive the requests that start
them, and runs a crash interrupted are resumed at start-up.

Step kinds reach other capabilities through their services: `tool` steps through
`platform.tools` (every ToolSource), `llm` steps through the chat service when it is in the
build (else they fail with `unavailable`), and run/step events go to the EventBus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from protocol import workflows as w
from sidecar.capability import Capability, Platform
from sidecar.settings.registry import SettingDef
from sidecar.workflows import handlers
from sidecar.workflows.service import DEFAULTS, WorkflowService, default_file_root
from sidecar.workflows.steps import ChatFn, StepRuntime, StepServices

if TYPE_CHECKING:
    from sidecar.server.router import Router


class WorkflowsCapability(Capability):
    name: ClassVar[str] = "workflows"
    settings: ClassVar[tuple[SettingDef, ...]] = (
        SettingDef("workflows.maxParallelSteps", "int", DEFAULTS["workflows.maxParallelSteps"],
                   "Steps of one run that may work at once (control steps not counted).", minimum=1, maximum=1024),
        SettingDef("workflows.maxDepth", "int", DEFAULTS["workflows.maxDepth"],
                   "How deep workflow steps may call other workflows.", minimum=1, maximum=50),
        SettingDef("workflows.fileRoots", "list", [],
                   "Folders file steps may read and write (empty: <data dir>/workflow-files)."),
    )

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.default_root = default_file_root(platform.config.data_dir)
        services = StepServices(tools=platform.tools, file_roots=self._file_roots, chat=self._find_chat(),
                                http=platform.http, owns_http=False)
        bus = self._find_bus()
        self.service = WorkflowService(platform.db, services, publish=bus.publish if bus is not None else None,
                                       setting=platform.settings.value)
        platform.provide(self.service)

    def _file_roots(self) -> list[Path]:
        roots = [Path(p).expanduser() for p in self.platform.settings.value("workflows.fileRoots")]
        if not roots:
            self.default_root.mkdir(mode=0o700, parents=True, exist_ok=True)
            roots = [self.default_root]
        return roots

    def _find_bus(self) -> Any:
        from sidecar.events.service import EventBus

        return self.platform.find(EventBus)

    def _find_chat(self) -> ChatFn | None:
        """The chat service's send, adapted to llm steps; None when chat is not in the build."""
        try:
            from protocol import llm
            from sidecar.llm.chat import ChatService
        except ImportError:
            return None
        chat = self.platform.find(ChatService)
        if chat is None:
            return None

        async def send(inputs: w.LlmInputs, rt: StepRuntime) -> w.LlmOutput:
            message = f"{inputs.system}\n\n{inputs.prompt}" if inputs.system else inputs.prompt
            params = llm.ChatSendParams(message=message, agent=inputs.agent or None, model=inputs.model or None,
                                        maxTokens=inputs.maxTokens)

            async def emit(event: Any) -> None:
                if isinstance(event, llm.TextDelta) and rt.chunk is not None:
                    await rt.chunk(event.text)

            result = await chat.send(params, emit)
            return w.LlmOutput(text=result.text, stopReason=result.stopReason,
                               usage={"inputTokens": result.usage.inputTokens,
                                      "outputTokens": result.usage.outputTokens,
                                      "provider": result.provider, "model": result.model})

        return send

    def register(self, router: Router) -> None:
        handlers.register(router, self.service)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.service.running():
            yield

