"""The screen's HTTP side (aiohttp): the page, its static files, the events stream and the two actions.

Routes:
    ``GET /``                  the page (kiosk name, welcome text, language and words filled in, HTML-escaped)
    ``GET /static/{name}``     the page's script and style, from the package (nothing comes from the internet)
    ``GET /events``            server-sent events: ``snapshot`` first, then ``view``, ``caption`` and ``reset``
    ``POST /api/press``        the start/end button: the control socket's ``press``, exactly as the GPIO button
    ``POST /api/say``          ``{"text": ...}``: typed text into the live session (at most ``max_text_chars``)

Safety: a loopback bind only answers to loopback host names (no DNS rebinding); with an access token every request
needs it, as ``?token=`` once (then a same-site, HTTP-only cookie) or ``Authorization: Bearer``. Actions must be JSON
from the page's own origin. The page's script may only talk to its own origin (Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from string import Template
from typing import Any

from aiohttp import web

from kiosk.config import ScreenConfig, is_loopback
from kiosk.errors import ControlError
from kiosk.screen.feed import ControlFeed
from kiosk.screen.views import DEFAULT_LABELS

log = logging.getLogger(__name__)

COOKIE = "kiosk_screen"
KEEPALIVE_S = 15.0
STATIC = {"screen.js": "text/javascript", "screen.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(*, config: ScreenConfig, name: str, feed: ControlFeed, token: str | None) -> web.Application:
    """The screen's aiohttp application; ``token`` (when not None) guards every request."""
    app = web.Application(middlewares=[_guard(config, token)], client_max_size=16 * 1024)
    app.on_response_prepare.append(_secure)
    page = _render(config, name)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        file = request.match_info["name"]
        if file not in STATIC:
            raise web.HTTPNotFound(text=f"no static file {file!r}")
        body = resources.files("kiosk.screen").joinpath("assets", file).read_bytes()
        return web.Response(body=body, content_type=STATIC[file], charset="utf-8")

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue = feed.bus.subscribe()
        try:
            await response.write(b"retry: 1000\n\n" + _sse("snapshot", feed.snapshot()))
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(_sse(message["event"], message["data"]))
        except (ConnectionError, asyncio.CancelledError):
            log.debug("a page left the events stream")
            raise
        finally:
            feed.bus.unsubscribe(queue)

    async def press(_: web.Request) -> web.Response:
        answer = await _ask(feed, {"cmd": "press"})
        return _answer(answer, keep=("did", "state"))

    async def say(request: web.Request) -> web.Response:
        if not config.text_input:
            return _fail(403, "typed text is turned off on this kiosk (screen.text_input)")
        try:
            body = await request.json()
        except ValueError:
            return _fail(400, 'send JSON such as {"text": "hello"}')
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _fail(400, 'send a non-empty "text"')
        text = " ".join(text.split())
        if len(text) > config.max_text_chars:
            return _fail(413, f"at most {config.max_text_chars} characters, please")
        answer = await _ask(feed, {"cmd": "say", "text": text})
        return _answer(answer, keep=("sent",))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "daemon": feed.connected.is_set(), "view": feed.view.key})

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", health)
    app.router.add_post("/api/press", press)
    app.router.add_post("/api/say", say)
    return app


async def _ask(feed: ControlFeed, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        return await feed.request(payload)
    except ControlError as exc:
        log.warning("%s", exc)
        return {"ok": False, "error": "the kiosk is not ready; try again in a moment", "status": 503}


def _answer(answer: dict[str, Any], *, keep: tuple[str, ...]) -> web.Response:
    if not answer.get("ok"):
        return _fail(int(answer.get("status", 409)), str(answer.get("error", "the kiosk refused")))
    return web.json_response({"ok": True, **{k: answer[k] for k in keep if k in answer}})


def _fail(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _render(config: ScreenConfig, name: str) -> str:
    template = Template(resources.files("kiosk.screen").joinpath("assets", "index.html").read_text(encoding="utf-8"))
    labels = {**DEFAULT_LABELS, **config.labels}
    return template.substitute(
        lang=html.escape(config.language),
        name=html.escape(name),
        welcome=html.escape(config.welcome),
        max_text=config.max_text_chars,
        text_input="true" if config.text_input else "false",
        labels=html.escape(json.dumps(labels)),
        start=html.escape(labels["start"]),
        send=html.escape(labels["send"]),
        placeholder=html.escape(labels["placeholder"]),
    )


def _guard(config: ScreenConfig, token: str | None) -> Any:
    loopback = is_loopback(config.bind)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback and request.host.rsplit(":", 1)[0] not in (*LOOPBACK_NAMES, config.bind):
            return _fail(421, f"this page answers to http://127.0.0.1:{config.port}/ only")
        if token is not None:
            given = request.query.get("token")
            if given is not None and _same(given, token):
                # Once: the token moves into a cookie, and out of the address bar and the history.
                redirect = web.HTTPSeeOther(location=request.rel_url.with_query({}).path)
                redirect.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
                raise redirect
            cookie = request.cookies.get(COOKIE, "")
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not (_same(cookie, token) or _same(bearer, token)):
                return _fail(401, "this screen needs its access token: open it once as /?token=TOKEN")
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                return _fail(403, "actions are taken from the kiosk's own page only")
            if request.content_type != "application/json":
                return _fail(415, "send actions as application/json")
        return await handler(request)

    return guard


async def _secure(_: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())
