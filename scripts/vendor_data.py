#!/usr/bin/env python3
"""Refresh the vendored Matomo lists in collector/flask_utm_tracker/data/.

    python scripts/vendor_data.py SOURCE_DIR [--check]

SOURCE_DIR holds the upstream files, under either their upstream names (a checkout of
matomo-org/searchengine-and-social-list and referrer-spam-list: SearchEngines.yml, Socials.yml,
AIAssistants.yml, spammers.txt, LICENSE) or their vendored names (matomo-SearchEngines.yml, ...).
Each file is parsed before it is copied, byte for byte. With --check nothing is written: the exit
status says whether the vendored copies equal SOURCE_DIR's. Record the new commits in
data/README.md after a refresh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parent.parent / "collector" / "flask_utm_tracker" / "data"

#: Vendored name -> upstream name.
FILES = {
    "matomo-SearchEngines.yml": "SearchEngines.yml",
    "matomo-Socials.yml": "Socials.yml",
    "matomo-AIAssistants.yml": "AIAssistants.yml",
    "matomo-referrer-spammers.txt": "spammers.txt",
    "matomo-LICENSE": "LICENSE",
}


def find(source: Path, vendored: str) -> Path:
    """The file in ``source`` under its vendored or its upstream name."""
    for name in (vendored, FILES[vendored]):
        path = source / name
        if path.is_file():
            return path
    raise SystemExit(
        f"{source} has neither {vendored} nor {FILES[vendored]}: pass the right folder."
    )


def validate(name: str, data: bytes) -> None:
    """Fail unless ``data`` has the shape the classifier reads."""
    text = data.decode("utf-8")
    if name.endswith(".yml"):
        parsed = yaml.safe_load(text)
        if not isinstance(parsed, dict) or not parsed:
            raise SystemExit(f"{name} is not a mapping of names to hosts: is it the right file?")
    elif name.endswith(".txt") and not any(line.strip() for line in text.splitlines()):
        raise SystemExit(f"{name} is empty: is it the right file?")


def main(argv: list[str]) -> int:
    args = [arg for arg in argv if not arg.startswith("--")]
    check = "--check" in argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(args[0])
    stale = []
    for vendored in FILES:
        data = find(source, vendored).read_bytes()
        validate(vendored, data)
        target = DATA / vendored
        if target.is_file() and target.read_bytes() == data:
            continue
        stale.append(vendored)
        if not check:
            target.write_bytes(data)
            print(f"updated {target.relative_to(DATA.parent.parent.parent)}")
    if check:
        for name in stale:
            print(f"differs from {source}: {name}")
        return 1 if stale else 0
    if stale:
        print("Now record the upstream commits in collector/flask_utm_tracker/data/README.md.")
    else:
        print("The vendored lists are up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
