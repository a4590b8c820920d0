"""Transcripts: recorded JSON-RPC sessions that replay against a fresh daemon.

`format` reads and writes the JSON Lines file, `matching` compares messages (with matchers
for volatile values), `volatile` picks default matchers when recording, `recorder` sits
between a client and the daemon, `replay` runs a transcript and reports differences.
The format is documented in tests/transcripts/README.md.
"""

from sidecar.transcripts.format import FORMAT_VERSION, Header, Line, Transcript, TranscriptError, load, loads
from sidecar.transcripts.matching import compare, compare_batch
from sidecar.transcripts.recorder import Recorder, serve_args
from sidecar.transcripts.replay import ReplayReport, replay
from sidecar.transcripts.volatile import default_matchers

__all__ = ["FORMAT_VERSION", "Header", "Line", "Recorder", "ReplayReport", "Transcript", "TranscriptError",
           "compare", "compare_batch", "default_matchers", "load", "loads", "replay", "serve_args"]
