"""How much encoder context a whisper.cpp call gets, and how a shortened call is checked.

whisper.cpp pads every input to 30 s and its encoder, the bulk of the cost on a CPU (about
87 % of a 2-second command on tiny.en, 2 threads), runs over all 1,500 frames (50 per second)
whatever the clip's length. `audio_ctx` shrinks that. Measured on tiny.en with 20 espeak-ng
commands (bench/voice_bench.py prints the same comparison every run):

- cut to the clip's length plus a margin (the usual recipe, 100-400 frames) the decoder no
  longer sees the long silence it was trained to end on: "Open settings. Open settings. ..."
  until the token limit, or an early "The"; 9-16 of 20 commands right instead of 19;
- 768 frames (15 s): faster, but still loops on some short commands;
- 1,000 frames (20 s): the same 19 of 20 commands right as the full 1,500, no loops, and the
  encoder about 35 % cheaper (p50 670 -> 430 ms for the whole call on this machine).

So a clip that fits in `COMMAND_CTX` frames (with `MARGIN` to spare) is encoded with
`COMMAND_CTX`, anything longer with the full context; the token limit scales with the clip
so a loop stays cheap; and a shortened call whose text looks like a loop (or is empty) is
decoded again with the full context, so the shortcut can cost time but never the answer.
"""

from __future__ import annotations

import re
import zlib

FULL_CTX = 1500
COMMAND_CTX = 1000
#: frames past the speech that the decoder must see to know it ended (2 s)
MARGIN = 100
FRAMES_PER_SECOND = 50
#: whisper's own cap for one segment's tokens that we used before (128); short clips get less
MAX_TOKENS = 128

_REPEAT = re.compile(r"(\b.{4,}?)(\W*\1){2,}", re.IGNORECASE | re.DOTALL)


def audio_ctx_for(n_samples: int, rate: int = 16_000) -> int:
    """`COMMAND_CTX` when the clip fits in it with `MARGIN` to spare, else 0 (the model's full
    context)."""
    frames = -(-n_samples * FRAMES_PER_SECOND // rate)  # ceil
    return COMMAND_CTX if frames + MARGIN <= COMMAND_CTX else 0


def max_tokens_for(seconds: float) -> int:
    """Spoken English runs at 3-4 tokens a second; 10 a second plus 16 leaves room for any real
    command and stops a loop after a few repeats."""
    return min(MAX_TOKENS, int(16 + 10 * seconds))


def looks_looped(text: str, seconds: float) -> bool:
    """Whisper's failure modes on a shortened context: the same phrase three or more times in a
    row, text that compresses like a loop (whisper's own test: gzip ratio > 2.4), more
    characters than anyone says in the time, or nothing at all."""
    data = text.strip().encode("utf-8")
    if not data:
        return True
    if len(data) / len(zlib.compress(data)) > 2.4 or len(data) > 25 * seconds + 20:
        return True
    return _REPEAT.search(text) is not None
