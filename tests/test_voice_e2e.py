"""voice/* on the real daemon (a subprocess): pyttsx3 prints "Audio saved to ..." to stdout
from inside the TTS thread; the daemon's fd-level guard must keep it off the protocol
stream. And voice libraries are not imported at start-up."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from sidecar.client import DaemonClient

pytest.importorskip("pyttsx3")


def test_tts_prints_never_reach_the_protocol_stream(daemon: DaemonClient) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    for i in range(3):
        spoken = daemon.request("voice/speak", {"text": f"stdout test number {i}"}, timeout=60)
        assert spoken["durationMs"] > 0
    processed = daemon.request("voice/process", {"text": "open settings"}, timeout=60)
    assert processed["intent"] == "OpenSettings" and processed["replyAudio"]["durationMs"] > 0
    daemon.request("system/ping")
    assert daemon.garbage == []  # nothing but JSON-RPC came out of stdout


def test_voice_libraries_are_not_imported_at_startup() -> None:
    import subprocess
    import sys

    code = ("import sys, sidecar.app; heavy = [m for m in ('hassil', 'numpy', 'scipy', 'pyttsx3', 'rapidfuzz', "
            "'pywhispercpp', 'faster_whisper', 'whisper_cpp_python', 'ctranslate2') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_understand_on_a_fresh_daemon(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn()
    u = client.request("voice/understand", {"text": "설정 좀 열어 주세요"})
    assert u["intent"] == "OpenSettings" and u["language"] == "ko"
