"""``kiosk demo``: a complete offline session: the sandbox (LiveKit server, broker, agent) and the daemon together.

Enter in the terminal is the button (``kiosk press --socket ...`` works too). With ``--mic-wav FILE`` the microphone
is a WAV file, spoken from the top at every press, and the demo presses by itself; ``--speaker-wav OUT`` records what
the kiosk plays. Without them it uses the machine's default sound devices. ``--screen`` also serves the visitor's page
(``kiosk screen``) and prints its address; then the page's Start button (or Enter) presses, and a ``--mic-wav`` speaks
at the start of every session.

Exit status: 0 when every session went live and none ended by a failure; 1 when one did not (the last line names the
session and the reason), or when fewer sessions ran than ``--sessions`` asked for; 2 with no sound device.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kiosk.cliformat import HelpFormatter, describe
from kiosk.commands.sandbox import EX_NO_SANDBOX, extra_hint, missing_sandbox_module
from kiosk.errors import AudioDeviceError, KioskError

if TYPE_CHECKING:
    from kiosk.daemon.sessionsummary import SessionSummary

#: The environment variable that gives ``--slow`` its default (a CI stage on an emulated CPU sets it).
SLOW_ENV = "KIOSK_DEMO_SLOW"
#: Exit status of a demo whose session did not go live or ended by a failure.
EX_SESSION_FAILED = 1

NO_AUDIO_HELP = """kiosk demo: no audio {what} found on this machine.
Run the demo with WAV files instead of a sound card:
    kiosk demo --mic-wav speech.wav --speaker-wav out.wav --sessions 1
(make a speech file with: espeak-ng -w speech.wav "Hello, what are your opening hours?")"""


def main(argv: list[str]) -> int:
    """Run ``kiosk demo``."""
    parser = argparse.ArgumentParser(prog="kiosk demo", description=describe(__doc__), formatter_class=HelpFormatter)
    parser.add_argument("--sessions", type=int, default=None, help="exit after N sessions (default: run until Ctrl-C)")
    parser.add_argument("--mic-wav", type=Path, help="16-bit WAV used as the microphone (no sound card needed)")
    parser.add_argument("--speaker-wav", type=Path, help="write what the kiosk plays to this WAV file")
    parser.add_argument(
        "--dialect",
        choices=["lyzr", "oshara", "livekit", "self"],
        default="lyzr",
        help="which broker the sandbox plays",
    )
    parser.add_argument("--silence-timeout", type=float, default=6.0, help="seconds of silence that end a session")
    parser.add_argument("--voice-wake", action="store_true", help="also start a session when someone talks")
    parser.add_argument(
        "--agent",
        choices=["scripted", "none"],
        default="scripted",
        help="who answers in the sandbox: its scripted agent, or none (the agent_no_show failure a lobby sees when "
        "the agent service is down)",
    )
    parser.add_argument(
        "--slow",
        type=float,
        default=None,
        metavar="FACTOR",
        help="stretch the session's deadlines (broker start and room connect, agent join, first words) by FACTOR, for "
        f"a machine that runs everything several times slower, such as an emulated CPU (default: ${SLOW_ENV}, or 1)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the daemon's log")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per session (progress lines go to stderr)"
    )
    parser.add_argument("--screen", action="store_true", help="serve the visitor's page and print its address")
    parser.add_argument("--screen-port", type=int, default=8780, help="the page's port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    if args.sessions is not None and args.sessions < 1:
        parser.error("--sessions must be at least 1")
    if args.slow is None:
        try:
            args.slow = float(os.environ.get(SLOW_ENV) or 1.0)
        except ValueError:
            parser.error(f"{SLOW_ENV} must be a number between 1 and 20 (got {os.environ[SLOW_ENV]!r})")
    if not 1.0 <= args.slow <= 20.0:
        parser.error(f"--slow (or {SLOW_ENV}) must be between 1 and 20 (got {args.slow:g})")
    missing = missing_sandbox_module()
    if missing is not None:  # the sandbox runs as a subprocess: say it here, not in its log
        print(extra_hint("kiosk demo", missing), file=sys.stderr)
        return EX_NO_SANDBOX
    try:
        return asyncio.run(_demo(args))
    except KioskError as exc:
        print(f"kiosk demo: {exc}", file=sys.stderr)
        return 1


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _demo(args: argparse.Namespace) -> int:
    from kiosk.audio import StreamFactory
    from kiosk.daemon.app import run
    from kiosk.demo import runner
    from kiosk.demo.wavio import WavStreamFactory

    factory: StreamFactory
    wav_factory: WavStreamFactory | None = None
    if args.mic_wav is not None or args.speaker_wav is not None:
        wav_factory = WavStreamFactory(mic_wav=args.mic_wav, speaker_wav=args.speaker_wav)
        factory = wav_factory
    else:
        from kiosk.audio import SoundDeviceFactory

        factory = SoundDeviceFactory()
        mic, speaker = factory.default_devices()
        if mic is None or speaker is None:
            print(NO_AUDIO_HELP.format(what="input" if mic is None else "output"), file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="kiosk-demo-"))
    api_key = runner.new_api_key()
    with (workdir / "sandbox.log").open("w") as log:
        sandbox = runner.start_sandbox(api_key=api_key, log=log, agent=args.agent, timeout_s=30.0 * args.slow)
        try:
            info = sandbox.info
            os.environ[runner.KEY_ENV + "_SECRET"] = info["livekit_api_secret"]
            config_path = workdir / "kiosk.toml"
            config_path.write_text(
                runner.demo_config(
                    dialect=args.dialect,
                    info=info,
                    workdir=workdir,
                    silence_s=args.silence_timeout,
                    log_level="info" if args.verbose else "error",
                    voice_wake=args.voice_wake,
                    wav_mic=args.mic_wav is not None,
                    slow=args.slow,
                )
                + (runner.SCREEN_SECTION if args.screen else "")
            )
            socket = workdir / "control.sock"
            (_err if args.json else _out)(
                f"kiosk demo: sandbox at {info['http_url']} ({args.dialect} broker), files in {workdir}"
            )
            loop = asyncio.get_running_loop()
            auto = wav_factory is not None and args.mic_wav is not None and not args.screen
            cue = wav_factory.cue if wav_factory is not None else None
            summaries: list[SessionSummary] = []
            presses: set[asyncio.Task[None]] = set()

            def press() -> None:
                task = loop.create_task(runner.press_when_ready(socket, cue))
                presses.add(task)
                task.add_done_callback(presses.discard)

            reports: set[asyncio.Task[None]] = set()
            say = _err if args.json else _out

            async def report(summary: SessionSummary) -> None:
                heard = await asyncio.to_thread(runner.agent_heard, info["http_url"], summary.room)
                if args.json:
                    _out(json.dumps({"session": dataclasses.asdict(summary), "agent_heard": heard}))
                else:
                    runner.print_summary(summary, heard, _out)

            def on_summary(summary: SessionSummary) -> None:
                summaries.append(summary)
                task = loop.create_task(report(summary))
                reports.add(task)
                if auto and (args.sessions is None or len(summaries) < args.sessions):
                    loop.call_later(2.5, press)

            screen = await runner.start_screen(config_path, args.screen_port, cue, _out) if args.screen else None
            if auto:
                press()
                say("kiosk demo: pressing the button; the microphone speaks " + str(args.mic_wav))
            else:
                runner.keyboard_presses(socket, say)
                say(f"kiosk demo: press Enter to start or end a session (or: kiosk press --socket {socket})")
            try:
                code = await run(config_path, stream_factory=factory, max_sessions=args.sessions, on_summary=on_summary)
                if reports:
                    await asyncio.wait(reports, timeout=10)
            except AudioDeviceError as exc:
                print(NO_AUDIO_HELP.format(what="device") + f"\n({exc})", file=sys.stderr)
                return 2
            finally:
                if screen is not None:
                    await screen.close()
        finally:
            sandbox.stop()
            if wav_factory is not None:
                wav_factory.close_speaker()
    say = _err if args.json else _out
    if args.speaker_wav is not None:
        say(f"kiosk demo: the speaker's sound is in {args.speaker_wav}")
    verdict = demo_verdict(summaries, wanted=args.sessions)
    if code == 0 and verdict is not None:
        code = EX_SESSION_FAILED
    say(f"kiosk demo: {len(summaries)} session(s); exit {code}")
    if verdict is not None:
        _err(f"kiosk demo: FAILED: {verdict}")
    return code


def demo_verdict(summaries: list[SessionSummary], *, wanted: int | None) -> str | None:
    """None when every session went live and none ended by a failure (and ``wanted`` sessions ran, when given);
    else what went wrong, in words, naming the first session that failed."""
    from kiosk.commands.statusview import FAILURE_WORDS

    for summary in summaries:
        if not summary.failed:
            continue
        what = "never went live" if summary.press_to_live_ms is None else "went live, then failed"
        failure = summary.failure or summary.end_reason or "unknown"
        return f"session {summary.number} {what}: {failure}: {FAILURE_WORDS.get(failure, failure)}"
    if wanted is not None and len(summaries) < wanted:
        return f"{len(summaries)} of {wanted} session(s) ran"
    return None
