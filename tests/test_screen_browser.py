"""The screen in a real headless Chromium (Debian's ``chromium``, driven by Playwright): a whole demo session from the
page's own button, layouts at 800x480 and 1920x1080, escaping, the text box's rule, and reconnecting by itself."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from playwright.async_api import BrowserContext, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from tests.fixtures.audio import SpeechClip
from tests.fixtures.screen import running_screen, screen_config

CHROMIUM = Path("/usr/bin/chromium")
# What works for a root user in a container with no GPU and no network but loopback.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = ((800, 480), (1920, 1080))
# Test instrumentation, from mutation records (a batch of events may reach the observer at once): every view the
# page has left, every text a caption's text span was given, and every class a caption item had before a change.
RECORDER = """() => {
  window.__views = [];
  window.__texts = [];
  window.__classes = [];
  new MutationObserver((records) => { for (const r of records) window.__views.push(r.oldValue); })
    .observe(document.body, {attributes: true, attributeFilter: ["data-view"], attributeOldValue: true});
  new MutationObserver((records) => {
    for (const r of records) {
      const item = r.target.closest && r.target.closest("#captions li");
      if (!item) continue;
      if (r.type === "attributes") window.__classes.push([item.dataset.segment, r.oldValue]);
      else if (r.target.classList.contains("text"))
        for (const node of r.addedNodes) window.__texts.push([item.dataset.segment, node.data]);
    }
  }).observe(document.getElementById("captions"),
             {subtree: true, childList: true, attributes: true, attributeFilter: ["class"], attributeOldValue: true});
}"""
LAYOUT = """() => {
  const box = (s) => document.querySelector(s).getBoundingClientRect();
  const size = (s) => parseFloat(getComputedStyle(document.querySelector(s)).fontSize);
  return {
    scroll: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
    viewport: [innerWidth, innerHeight],
    press: [box("#press").width, box("#press").height],
    send: [box("#send").width, box("#send").height],
    input: box("#typed-text").height,
    footer: box("footer").bottom,
    label: size("#state-label"),
    caption: size("#captions .text"),
  };
}"""


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium (never a browser Playwright downloads)."""
    assert CHROMIUM.exists(), (
        "the browser tests need Debian's chromium: run scripts/setup.sh (apt-get install chromium)"
    )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with a fresh profile, every step bounded by 20 s."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(chromium),
            headless=True,
            args=FLAGS,
            viewport={"width": 800, "height": 480},
            timeout=60_000,
            # The page's CSP forbids eval, which newer Chromium builds also apply to Playwright's wait_for_function;
            # the page's own scripts are served from 'self' and do not need the bypass.
            bypass_csp=True,
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            await context.close()


async def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    """Open the screen; returns the page and the list every request's URL is added to."""
    page = await context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(url)
    await page.wait_for_function("document.body.dataset.view !== 'offline'")
    await page.evaluate(RECORDER)
    return page, requests


def assert_not_blank(png: bytes, size: tuple[int, int]) -> None:
    """A screenshot of the right size with real content: many grey levels, spread out."""
    image = Image.open(io.BytesIO(png))
    assert image.size == size
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    assert grey.std() > 20, f"screenshot looks blank (std {grey.std():.1f})"
    assert len(np.unique(grey)) > 30


async def views(page: Page) -> list[str]:
    """Every view the page has shown since :data:`RECORDER` ran, the current one last."""
    shown: list[str] = await page.evaluate("window.__views.concat([document.body.dataset.view])")
    return shown


async def test_screen_follows_a_demo_session_driven_from_its_own_button(
    browser: BrowserContext, speech: SpeechClip, tmp_path: Path
) -> None:
    """`kiosk demo --screen`: Start connects, the page listens and speaks, shows both sides' captions (interim in
    place), takes typed text to the agent and shows its answer, fits 800x480 and 1920x1080, and End ends it."""
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kiosk", "demo", "--screen", "--screen-port", "0", "--silence-timeout", "60",
        "--mic-wav", str(speech.wav), "--speaker-wav", str(tmp_path / "speaker.wav"), "--verbose",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "demo.err").open("w"), env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert demo.stdout is not None
    try:
        async with asyncio.timeout(60):
            while "the screen is at" not in (line := (await demo.stdout.readline()).decode()):
                assert line, "the demo ended before serving the screen: " + (tmp_path / "demo.err").read_text()
        url = line.split("the screen is at ")[1].split()[0]
        page, requests = await open_page(browser, url)
        try:
            await follow_a_session(page, url, requests, tmp_path)
        except (AssertionError, PlaywrightError) as exc:
            raise AssertionError(await diagnose(page, tmp_path)) from exc
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(demo.wait(), timeout=30)
    out = (await demo.stdout.read()).decode()
    assert code == 0, out + (tmp_path / "demo.err").read_text()[-3000:]
    assert "-- session 1" in out and "ended by control" in out, out


async def diagnose(page: Page, tmp_path: Path) -> str:
    """What the page showed and what the demo logged, for a failure's message."""
    shown = await page.evaluate("[window.__views, window.__texts]")
    (tmp_path / "failure.png").write_bytes(await page.screenshot())
    log = (tmp_path / "demo.err").read_text()[-4000:]
    return f"views {shown[0]}\ncaptions {shown[1]}\nscreenshot {tmp_path / 'failure.png'}\ndemo log:\n{log}"


async def follow_a_session(page: Page, url: str, requests: list[str], tmp_path: Path) -> None:
    """The demo session of the test above, from the page: start, both sides' captions, typed text, sizes, end."""
    await page.wait_for_selector("body[data-view=ready]")
    assert await page.inner_text("#kiosk-name") == "Demo kiosk"
    assert await page.is_visible("#welcome") and await page.is_hidden("#typed")
    assert await page.inner_text("#press") == "Start"

    await page.click("#press")
    agent = page.locator("#captions li.agent:not(.interim)", has_text="Hello, this is the sandbox agent.")
    await agent.wait_for()
    # The sandbox agent may hear the one utterance as more than one turn: the first is enough.
    visitor = page.locator("#captions li.visitor:not(.interim)", has_text="(spoke for").first
    await visitor.wait_for(timeout=30_000)
    await page.wait_for_selector("#typed:not([hidden])")
    await page.fill("#typed-text", "Where is the lift?")
    await page.click("#send")
    answer = page.locator("#captions li.agent:not(.interim)", has_text="You typed: Where is the lift?")
    await answer.wait_for()
    assert await page.locator("#captions li.visitor", has_text="Where is the lift?").count() == 1
    assert await page.input_value("#typed-text") == ""
    assert await page.inner_text("#press") == "End"

    # The visitor's words came as an interim "(speech)", replaced in the same item by the final text.
    segment = await visitor.get_attribute("data-segment")
    texts = [text for seg, text in await page.evaluate("window.__texts") if seg == segment]
    classes = [before for seg, before in await page.evaluate("window.__classes") if seg == segment]
    assert texts[0] == "(speech)" and texts[-1].startswith("(spoke for"), texts
    assert "caption visitor interim" in classes, classes
    assert await page.locator(f'#captions li[data-segment="{segment}"]').count() == 1
    shown = await views(page)
    assert {"connecting", "listening", "speaking"} <= set(shown), shown
    assert shown.index("connecting") < shown.index("listening") < shown.index("speaking"), shown

    for width, height in SIZES:
        await page.set_viewport_size({"width": width, "height": height})
        layout: dict[str, Any] = await page.evaluate(LAYOUT)
        assert layout["scroll"] == layout["viewport"] == [width, height], layout  # nothing scrolls but captions
        assert min(layout["press"]) >= 48 and min(layout["send"]) >= 48 and layout["input"] >= 48, layout
        assert layout["footer"] <= height and layout["label"] >= 32 and layout["caption"] >= 22, layout
        shot = await page.screenshot()
        (tmp_path / f"screen-{width}x{height}.png").write_bytes(shot)
        assert_not_blank(shot, (width, height))
    await page.set_viewport_size({"width": 800, "height": 480})

    await page.click("#press")
    await page.wait_for_selector("body[data-view=ready]")
    assert "ending" in (await views(page))[len(shown) - 1 :]
    assert await page.locator("#captions li").count() == 0, "the conversation stays on screen after the end"
    assert await page.is_visible("#welcome") and await page.is_hidden("#typed")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    assert requests and all(r.startswith(origin) for r in requests), requests


async def test_page_escapes_captions_hides_the_text_box_and_reconnects(browser: BrowserContext, tmp_path: Path) -> None:
    """Markup in a caption stays text; no text box when the agent takes none; the page rides out a daemon restart
    and a restart of the screen's own server."""
    config = screen_config(tmp_path, text_input=False, language="de")
    async with running_screen(config) as (daemon, service, url):
        page, _ = await open_page(browser, url)
        assert await page.get_attribute("html", "lang") == "de"
        daemon.publish({"type": "state", "state": "live", "agent": "listening", "session": 1})
        hostile = '<img src=x onerror="window.__pwned = 1">Hi'
        daemon.publish({"type": "caption", "session": 1, "role": "agent", "text": hostile, "segment_id": "s1", "final": True})  # fmt: skip
        item = page.locator("#captions li.agent .text")
        await item.wait_for()
        assert await item.text_content() == hostile
        assert await page.locator("#captions img").count() == 0
        assert await page.evaluate("window.__pwned") is None
        assert await page.is_hidden("#typed"), "a text box for an agent that takes no typed text"

        await daemon.stop()
        await page.wait_for_selector("body[data-view=offline]")
        assert await page.is_disabled("#press")
        await daemon.start()
        await page.wait_for_selector("body[data-view=listening]")

        await service.close()
        await page.wait_for_selector("body[data-view=offline]")
        host, port = urlsplit(url).hostname, urlsplit(url).port
        assert host is not None and port is not None
        again = type(service)(config=config, port=port)
        await again.start()
        try:
            await page.wait_for_selector("body[data-view=listening]")
        finally:
            await again.close()
