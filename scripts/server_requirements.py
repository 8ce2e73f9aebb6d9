"""Print the server's Python requirements for one Python version: scripts/server-requirements.txt
with the pins of scripts/server-requirements-py<VERSION>.txt in place of its own (packages
whose pinned release has no wheel for that Python).

    python3 scripts/server_requirements.py 3.14 > build/requirements-py3.14.txt
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pins(path: Path) -> dict[str, str]:
    return {re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].lower(): line.strip()
            for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")}


def merged(version: str) -> list[str]:
    out = pins(HERE / "server-requirements.txt")
    extra = HERE / f"server-requirements-py{version}.txt"
    if extra.exists():
        out.update(pins(extra))
    return list(out.values())


if __name__ == "__main__":
    print("\n".join(merged(sys.argv[1])))
