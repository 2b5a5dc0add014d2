"""A real browser for the console's end-to-end tests: Playwright for Python driving the headless Chromium that
Debian packages (`apt-get install chromium`; Playwright's own browser download is not reachable from every
machine). Where either is missing, the browser tests are skipped and say so, unless
GOLDTRAIL_TEST_REQUIRE_BROWSER=1 makes that a failure (CI sets it).

Screenshots go to GOLDTRAIL_SCREENSHOT_DIR when set, else to the test's temporary folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("GOLDTRAIL_TEST_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("GOLDTRAIL_TEST_REQUIRE_BROWSER") == "1"


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GOLDTRAIL_TEST_CHROMIUM)"
    return None


def require_browser() -> None:
    problem = browser_problem()
    if problem:
        if REQUIRE_BROWSER:
            pytest.fail(f"{problem} and GOLDTRAIL_TEST_REQUIRE_BROWSER=1")
        pytest.skip(f"{problem}: browser tests skipped")


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GOLDTRAIL_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
