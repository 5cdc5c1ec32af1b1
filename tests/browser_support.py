"""Helpers for the browser tests: launch Debian's Chromium, block other hosts, tell drawn Hangul from boxes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})

# A fontconfig setup that hides every font declaring Korean support, the state of a machine without one.
NO_KOREAN_FONTS = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <selectfont><rejectfont><pattern><patelt name="lang"><string>ko</string></patelt></pattern></rejectfont></selectfont>
</fontconfig>
"""

# Draws each distinct Hangul syllable of an element's text on a canvas in the element's font, and the
# same for code points no font has (U+0378, U+0379, U+0380): a syllable whose bitmap is blank or equal
# to theirs is drawn as the missing-glyph box ("tofu").
_DRAW_HANGUL = """(element) => {
  const style = getComputedStyle(element);
  const font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const size = Math.ceil(parseFloat(style.fontSize) * 3);
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const draw = (ch) => {
    ctx.clearRect(0, 0, size, size);
    ctx.font = font;
    ctx.textBaseline = "top";
    ctx.fillText(ch, size / 4, size / 4);
    const alpha = ctx.getImageData(0, 0, size, size).data.filter((_, i) => i % 4 === 3);
    return alpha.some((a) => a > 0) ? alpha.join(",") : "";
  };
  const boxes = new Set(["\\u0378", "\\u0379", "\\u0380"].map(draw));
  const syllables = [...new Set(element.textContent.match(/[\\uac00-\\ud7a3]/g) || [])];
  const bitmaps = syllables.map(draw);
  return {
    syllables,
    tofu: syllables.filter((_, i) => bitmaps[i] === "" || boxes.has(bitmaps[i])),
    distinct: new Set(bitmaps).size,
  };
}"""


@dataclass(frozen=True)
class HangulDrawing:
    syllables: list[str]  # distinct Hangul syllables of the element's text
    tofu: list[str]  # those drawn blank or as the missing-glyph box
    distinct: int  # distinct bitmaps among the syllables (one per syllable when a font draws them)


def launch_chromium(playwright: Playwright, fontconfig_file: Path | None = None) -> Browser:
    """Debian's Chromium, headless; `fontconfig_file` replaces the system's font configuration."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium fonts-nanum)")
    env = None if fontconfig_file is None else {**os.environ, "FONTCONFIG_FILE": str(fontconfig_file)}
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, env=env)


def block_other_hosts(context: BrowserContext) -> list[str]:
    """Abort every request of `context` to a host that is not loopback; returns the list of those URLs."""
    blocked: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname not in LOOPBACK_HOSTS:
            blocked.append(url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    context.route("**/*", handle)
    return blocked


def draw_hangul(page: Page, selector: str) -> HangulDrawing:
    """How the first element matching `selector` draws its Hangul syllables."""
    result = page.locator(selector).first.evaluate(_DRAW_HANGUL)
    return HangulDrawing(syllables=result["syllables"], tofu=result["tofu"], distinct=result["distinct"])
