"""Take the documentation's screenshots of the demo and the dashboard, at 390 px and 1,280 px.

    .venv/bin/python scripts/screenshots.py [FOLDER]     # default: docs/_static/screenshots

They are the pages the layout test measures (tests/e2e/test_layout_widths.py, on SQLite, in
Chromium at /usr/bin/chromium): each page is checked for sideways scrolling first, then saved as
``<page>-<width>.png`` (full page, one device pixel per CSS pixel). Pages: landing, login,
signup, invite, signup-invited, account, forbidden (the dashboard's 403), dashboard,
dashboard-chart-data, dashboard-90-days-chart-data, dashboard-bad-filter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "docs" / "_static" / "screenshots"


def main(argv: list[str]) -> int:
    folder = Path(argv[0]).resolve() if argv else DEFAULT
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    env = {**os.environ, "UTM_TRACKER_SCREENSHOT_DIR": str(folder)}
    test = "tests/e2e/test_layout_widths.py::test_every_page_fits_the_screen"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test, "-k", "sqlite"]
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if done.returncode:
        print("The layout test failed: screenshots may be missing.", file=sys.stderr)
        return done.returncode
    shots = sorted(folder.glob("*.png"))
    for shot in shots:
        print(f"{shot.stat().st_size // 1024:6d} KiB  {shot.relative_to(ROOT)}")
    return 0 if shots else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
