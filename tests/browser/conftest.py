"""Headless Chromium (Debian's package, installed by ``scripts/stack/install-debian.sh``) driven by Playwright.

Playwright for Python brings its driver; the browser is the Debian binary
(``executable_path``), never one Playwright downloads. ``shot`` saves a PNG
of the page, into ``$ROLLBACKD_SCREENSHOTS`` when set (``docs/images`` for the
responder guide) and into the test's temp dir otherwise, and checks that it
is a real image of the page's width.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: the tests may run as root, where Chromium's sandbox refuses to start.
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=60_000)
        yield chromium
        await chromium.close()


def _folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ROLLBACKD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def shot(page: Page, name: str, tmp_path: Path) -> Path:
    path = _folder(tmp_path) / f"responder-{name}.png"
    png = await page.screenshot(path=path, full_page=True)
    assert png[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert width == VIEWPORT["width"]
    assert height >= 200
    return path
