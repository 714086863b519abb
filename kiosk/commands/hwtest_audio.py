"""``kiosk test mic`` and ``kiosk test speaker``: the terminal side of :mod:`kiosk.hwtest.mic` and ``.speaker``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from kiosk.commands.hwtest_common import EXIT_PROBLEM, Printer, run_async
from kiosk.config import KioskConfig
from kiosk.hwtest import mic, speaker
from kiosk.hwtest.meter import Reading, Summary

#: Seconds each input is heard with ``--scan`` unless ``--seconds`` is given.
SCAN_SECONDS = 3.0
#: A kept (scrolling) meter line every this many readings (one a second); a terminal also redraws in between.
KEEP_EVERY = 10
HALF_SECOND = 5


def run_mic(args: argparse.Namespace, config: KioskConfig, factory: Any, out: Printer) -> int:
    """Listen to one input with a live meter, or ``--scan`` every input; exit 0 when speech was heard well."""
    if args.scan:
        return _scan(args, config, factory, out)
    audio = mic.raw_config(config.audio, args.device)
    wanted = audio.input_device if audio.input_device is not None else "the default input"
    out.text(f"listening to {wanted!s} for {args.seconds:g} s: speak as a visitor would (Ctrl-C stops)")
    count = {"n": 0}

    def on_reading(reading: Reading) -> None:
        count["n"] += 1
        out.live(reading.line(), keep=count["n"] % (KEEP_EVERY if out.tty else HALF_SECOND) == 0)
        out.data("reading", reading)

    summary = run_async(
        lambda stop: mic.listen(
            audio=audio, trigger=config.trigger, factory=factory, seconds=args.seconds, on_reading=on_reading, stop=stop
        )
    )
    if out.tty:
        out.live("", keep=False)
    _print_summary(summary, out)
    return 0 if summary.ok else EXIT_PROBLEM


def _print_summary(summary: Summary, out: Printer) -> None:
    out.data("summary", summary)
    out.text(f"device:       {summary.device}")
    out.text(f"listened:     {summary.seconds:.1f} s, speech {summary.speech_s:.1f} s")
    out.text(
        f"levels:       peak {summary.peak_dbfs:.1f} dBFS, loudest 100 ms {summary.loudest_dbfs:.1f} dBFS, "
        f"noise floor {summary.floor_dbfs:.1f} dBFS"
    )
    out.text(f"clipping:     {summary.clipped_samples} samples")
    out.text(f"verdict:      {summary.verdict}")


def _scan(args: argparse.Namespace, config: KioskConfig, factory: Any, out: Printer) -> int:
    seconds = args.seconds if args.seconds != 10.0 else SCAN_SECONDS
    out.text(f"trying every input for {seconds:g} s each: keep talking at the kiosk until the scan ends")

    def on_start(index: int, name: str) -> None:
        out.live(f"  [{index:>2}] {name}: listening...", keep=False)

    def on_result(result: mic.ScanResult) -> None:
        out.data("input", result)
        if result.summary is None:
            line = f"  [{result.index:>2}] {result.name}: cannot open ({result.error})"
        else:
            s = result.summary
            line = (
                f"  [{result.index:>2}] {result.name}: speech {s.speech_s:.1f} s, loudest {s.loudest_dbfs:.1f} dBFS, "
                f"floor {s.floor_dbfs:.1f} dBFS" + (", CLIPPING" if s.clipped_samples else "")
            )
        out.live(line, keep=True)

    async def body(stop: asyncio.Event) -> list[mic.ScanResult]:
        return await mic.scan(
            audio=config.audio,
            trigger=config.trigger,
            factory=factory,
            seconds=seconds,
            on_result=on_result,
            on_start=on_start,
            match=None if args.device is None else str(args.device),
        )

    results = run_async(body)
    chosen = mic.best(results)
    if chosen is None:
        out.data("suggestion", {"input_device": None})
        out.text("no input heard speech: check the microphone's cable and its capture gain (alsamixer, F4)")
        return EXIT_PROBLEM
    out.data("suggestion", {"input_device": chosen.name, "index": chosen.index})
    out.text(f"suggestion:   [{chosen.index}] {chosen.name} heard you best; in the config's [audio] table set")
    out.text(f"              input_device = {_toml_name(chosen.name)}")
    return 0


def _toml_name(name: str) -> str:
    # A name substring survives re-enumeration better than an index; drop ALSA's (hw:1,0), which can change.
    short = name.split(" (hw:")[0].split(": ")[0]
    return '"' + short.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_speaker(args: argparse.Namespace, config: KioskConfig, factory: Any, out: Printer) -> int:
    """Play the tone, the chimes and the sentence on the configured output."""
    update: dict[str, object] = {}
    if args.device is not None:
        update["output_device"] = args.device
    if args.volume is not None:
        update["output_volume"] = args.volume
    audio = type(config.audio).model_validate({**config.audio.model_dump(), **update})
    source = "--volume" if args.volume is not None else "audio.output_volume"
    out.text(f"playing on {audio.output_device or 'the default output'} at volume {audio.output_volume:g} ({source})")

    def on_step(text: str) -> None:
        out.text(f"  {text}")
        out.data("step", {"step": text})

    report = run_async(
        lambda stop: speaker.play(
            audio=audio,
            factory=factory,
            tone_hz=args.tone_hz,
            tone_s=args.tone_seconds,
            sentence=speaker.SENTENCE,
            on_step=on_step,
        )
    )
    out.data("report", report)
    out.text(f"done on {report.device}. Too quiet or too loud? Set audio.output_volume (now {report.volume:g}),")
    out.text("or the card's own level with alsamixer (F6 picks the card).")
    return 0
