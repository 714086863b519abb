"""Configuration models: one frozen pydantic model per subsystem, unknown keys refused.

The key names are a public contract: installers' ``kiosk.toml`` files and the tests depend on them.
Loading from a file (and turning validation errors into messages that name file and key) lives in
:mod:`kiosk.configfile`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

Dialect = Literal["lyzr", "oshara", "livekit", "self"]
#: Where typed text goes: "auto" = "voice.user_text" for Oshara's agents, "lk.chat" (livekit-agents) for the others.
TextTopicSetting = Literal["auto", "lk.chat", "voice.user_text"]
LedKind = Literal["none", "single", "rgb", "per-state", "apa102"]
#: Byte order of an APA102's colour channels on the wire (most rings: "bgr").
ColorOrder = Literal["rgb", "rbg", "grb", "gbr", "brg", "bgr"]
#: ``audio.echo_cancellation``: on, off, or "auto" (off for a speakerphone that cancels its own echo).
EchoCancellation = bool | Literal["auto"]
HoldAction = Literal["none", "end", "restart"]
LogLevel = Literal["debug", "info", "warning", "error"]
DeviceRef = str | int | None

PositiveSeconds = Annotated[float, Field(gt=0)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
BcmPin = Annotated[int, Field(ge=0, le=27)]

#: Dialects whose broker is reached over HTTP and so need ``broker.url``.
HTTP_DIALECTS: frozenset[str] = frozenset({"lyzr", "oshara", "livekit"})
#: Dialects that must have an API key (``self`` needs the LiveKit API secret).
KEYED_DIALECTS: frozenset[str] = frozenset({"lyzr", "oshara", "self"})
SECRET_SOURCE_KEYS: tuple[str, ...] = ("api_key_file", "api_key_credential", "api_key_env")


def default_identity() -> str:
    """Return a stable participant identity: ``kiosk-`` plus the machine id, else the host name."""
    try:
        machine_id = Path("/etc/machine-id").read_text(encoding="ascii").strip()
    except OSError:
        machine_id = ""
    if machine_id:
        return f"kiosk-{machine_id[:12]}"
    return f"kiosk-{socket.gethostname()}"


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(Section):
    """Who this kiosk is in the room."""

    identity: str = Field(default_factory=default_identity, min_length=1, max_length=128)
    name: str = Field(default="Kiosk", min_length=1, max_length=128)


class BrokerConfig(Section):
    """Where the kiosk gets its LiveKit grant, and how it authenticates there."""

    dialect: Dialect = "lyzr"
    url: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    timeout_s: PositiveSeconds = 10.0
    api_key_file: Path | None = None
    api_key_credential: str | None = None
    api_key_env: str | None = None
    ca_file: Path | None = None
    livekit_url: str | None = None
    livekit_api_key: str | None = None
    token_ttl_s: Annotated[int, Field(ge=60, le=86400)] = 900
    room_prefix: str = Field(default="kiosk", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    end_retry_max_s: PositiveSeconds = 300.0
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url", "livekit_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must start with https:// (or wss:// for livekit_url)")
        return value.rstrip("/")

    @field_validator("api_key_credential")
    @classmethod
    def _credential_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or value in {"", ".", ".."}):
            raise ValueError("must be a bare systemd credential name (as in LoadCredential=NAME:PATH)")
        return value

    @model_validator(mode="after")
    def _dialect_needs(self) -> BrokerConfig:
        sources = [key for key in SECRET_SOURCE_KEYS if getattr(self, key) is not None]
        if len(sources) > 1:
            raise ValueError(f"set exactly one of {', '.join(SECRET_SOURCE_KEYS)}; found {', '.join(sources)}")
        if not sources and self.dialect in KEYED_DIALECTS:
            raise ValueError(f"dialect {self.dialect!r} needs an API key: set one of {', '.join(SECRET_SOURCE_KEYS)}")
        if self.dialect in HTTP_DIALECTS and self.url is None:
            raise ValueError(f"dialect {self.dialect!r} needs broker.url (the broker's https:// address)")
        if self.dialect in {"lyzr", "oshara"} and not self.agent_id:
            raise ValueError(f"dialect {self.dialect!r} needs broker.agent_id (the agent's id at the vendor)")
        if self.dialect == "self":
            missing = [k for k in ("livekit_url", "livekit_api_key") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"dialect 'self' needs broker.{' and broker.'.join(missing)}")
        problem = url_path_problem(self.dialect, self.url)
        if problem is not None:
            raise ValueError(problem)
        return self


#: Per dialect: the path the kiosk appends to ``broker.url`` itself, and the path parts that must not be in it.
_ADDED_PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lyzr": ("/v1/sessions/start", ("/v1",)),
    "oshara": ("/api/agents/agent-session/", ("/api",)),
}


def url_path_problem(dialect: str, url: str | None) -> str | None:
    """Why ``broker.url`` would send requests to a doubled path for ``dialect`` (and the URL to use), or None.

    Source of the rule: the vendors' endpoints in :mod:`kiosk.broker.vendors`, which append their own path.
    """
    if url is None or dialect not in _ADDED_PATHS:
        return None
    added, parts = _ADDED_PATHS[dialect]
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    path = slash + path
    # A part counts as a whole path segment: "/v1" and "/v1/..." do, "/v10" does not.
    starts = [
        i
        for part in parts
        for i in range(len(path))
        if path.startswith(part, i) and path[i + len(part) :][:1] in {"", "/"}
    ]
    if not starts:
        return None
    cut = min(starts)
    fixed = f"{scheme}://{host}{path[:cut]}"
    return (
        f"broker.url {url!r} already holds {path[cut:]!r}, but the kiosk adds {added} itself (requests would go to "
        f"{fixed}{path[cut:]}{added}, a 404): set broker.url = {json.dumps(fixed)}"
    )


class AudioConfig(Section):
    """Microphone, speaker and the processing between them."""

    input_device: DeviceRef = None
    output_device: DeviceRef = None
    input_channel: Annotated[int, Field(ge=0, le=31)] = 0
    echo_cancellation: EchoCancellation = "auto"
    noise_suppression: bool = True
    high_pass_filter: bool = True
    auto_gain: bool = True
    # While the speaker plays (and 0.75 s after), processed mic frames below this level are residual echo and are
    # attenuated by 40 dB (kiosk.audio.processing); -120 = off.
    echo_gate_dbfs: Annotated[float, Field(ge=-120, le=-30)] = -45.0
    output_volume: Unit = 0.8
    chimes: bool = True
    chime_volume: Unit = 0.5
    pre_roll_ms: Annotated[int, Field(ge=0, le=10000)] = 1500
    # 15 s at most: the agent must receive the whole buffer within 3 s (see kiosk.audio.preroll.UPLINK_BUDGET_BITS).
    max_preconnect_s: Annotated[float, Field(ge=0, le=15)] = 15.0
    speech_onset_ms: Annotated[int, Field(ge=30, le=2000)] = 120
    speech_offset_ms: Annotated[int, Field(ge=30, le=5000)] = 600
    stall_timeout_s: PositiveSeconds = 2.0
    reopen_backoff_max_s: PositiveSeconds = 30.0
    # While live, a capture of only zero samples this long reopens the microphone once; zeros again from a stream that
    # still delivers on time are the device's own mute, shown as muted (kiosk.audio.deafness); 0 = off.
    digital_silence_s: Annotated[float, Field(ge=0, le=600)] = 6.0

    @field_validator("echo_cancellation", mode="before")
    @classmethod
    def _echo_setting(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        raise ValueError('must be true, false or "auto"')


class TriggerConfig(Section):
    """What starts (and ends) a session: the button and voice wake."""

    button_pin: BcmPin | None = None
    button_pull_up: bool = True
    bounce_time_ms: Annotated[int, Field(ge=0, le=1000)] = 30
    hold_time_s: PositiveSeconds = 2.0
    hold_action: HoldAction = "end"
    # Extra buttons (wired like button_pin): output volume steps, and a privacy mute of the microphone.
    volume_up_pin: BcmPin | None = None
    volume_down_pin: BcmPin | None = None
    mute_pin: BcmPin | None = None
    voice_wake: bool = False
    vad_aggressiveness: Annotated[int, Field(ge=0, le=3)] = 3
    wake_min_speech_ms: Annotated[int, Field(ge=60, le=5000)] = 400
    cooldown_s: Annotated[float, Field(ge=0, le=120)] = 3.0
    # The wake guard (kiosk.wakeguard): who may wake the kiosk, and how often.
    wake_min_dbfs: Annotated[float, Field(ge=-90, le=0)] = -45.0
    wake_max_per_hour: Annotated[int, Field(ge=1, le=3600)] = 6
    wake_backoff_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    wake_backoff_max_s: Annotated[float, Field(ge=0, le=86400)] = 1800.0

    @model_validator(mode="after")
    def _backoff_order(self) -> TriggerConfig:
        if self.wake_backoff_s > self.wake_backoff_max_s:
            raise ValueError("wake_backoff_s must not be longer than wake_backoff_max_s")
        return self


class SessionConfig(Section):
    """How long a session may take to start, and when it ends by itself."""

    silence_timeout_s: PositiveSeconds = 20.0
    max_duration_s: PositiveSeconds = 600.0
    agent_join_timeout_s: PositiveSeconds = 15.0
    connect_timeout_s: PositiveSeconds = 10.0
    #: The first words must reach the agent within this much time of a working link (s), or the session fails as
    #: ``first_words_timeout``: livekit-agents drops a pre-connect buffer not received whole within 3 s anyway.
    first_words_timeout_s: PositiveSeconds = 5.0
    error_display_s: PositiveSeconds = 5.0
    #: How long the room may be reconnecting before the session ends as ``network_lost`` (s), counted from the SDK's
    #: ``reconnecting`` (it notices a dead link within livekit-server's 15 s ping timeout, or when ICE fails). 20 s
    #: lets the SDK make its resume attempt and three rejoins (livekit rust-sdks ``rtc_engine``: 5 s signal connect
    #: timeout per attempt, backoff of up to 0.3, 0.6, 1.2 s between them), so a link back within it is taken up
    #: within one attempt. Longer is of little use: livekit-server drops a participant whose transport failed about
    #: 20 s after its last packet (ICE failed after 15 s, then 5 s ``disconnectCleanupDuration``) and closes an empty
    #: room 20 s later (``departure_timeout``); a visitor who heard nothing for half a minute has likely gone.
    network_lost_s: PositiveSeconds = 20.0
    #: An agent that says it is thinking or speaking (``lk.agent.state``) while none of its audio comes for this long
    #: (s) counts as silent (livekit/agents#3427: stuck in "speaking" after an error). 15 s is above a slow LLM's first
    #: token plus the first TTS audio (a few seconds; reasoning models up to about 10 s); livekit-agents stays in
    #: "thinking" while a tool runs, so an agent with slower tools should say something first or raise this.
    agent_stuck_s: PositiveSeconds = 15.0
    log_transcript: bool = True
    text_topic: TextTopicSetting = "auto"
    # Voice-woken sessions only (kiosk.wakeguard): a shorter limit, and proof that someone listens to the agent.
    wake_max_duration_s: PositiveSeconds = 180.0
    wake_confirm_s: PositiveSeconds = 12.0
    wake_talkover_turns: Annotated[int, Field(ge=1, le=20)] = 2

    @model_validator(mode="after")
    def _ordering(self) -> SessionConfig:
        if self.silence_timeout_s >= self.max_duration_s:
            raise ValueError("silence_timeout_s must be shorter than max_duration_s")
        return self


class RgbPins(Section):
    """The three pins of an RGB LED."""

    red: BcmPin
    green: BcmPin
    blue: BcmPin


class PerStatePins(Section):
    """One LED per state; a state without a pin shows nothing."""

    idle: BcmPin | None = None
    connecting: BcmPin | None = None
    live: BcmPin | None = None
    error: BcmPin | None = None


#: Pins of the Raspberry Pi's SPI ports (BCM): clock, data (MOSI), MISO, and the select pin of each device number.
SPI_PORT_PINS: dict[int, tuple[int, int, int, tuple[int, ...]]] = {
    0: (11, 10, 9, (8, 7)),
    1: (21, 20, 19, (18, 17, 16)),
}


class RingConfig(Section):
    """An APA102 (DotStar) LED ring or strip: on an SPI port, or on any pins through gpiozero's software SPI."""

    count: Annotated[int, Field(ge=1, le=256)] = 12
    spi_port: Annotated[int, Field(ge=0, le=1)] = 0
    spi_device: Annotated[int, Field(ge=0, le=2)] = 0
    clock_pin: BcmPin | None = None
    data_pin: BcmPin | None = None
    select_pin: BcmPin | None = None
    order: ColorOrder = "bgr"

    @model_validator(mode="after")
    def _port_or_pins(self) -> RingConfig:
        given = [k for k in ("clock_pin", "data_pin", "select_pin") if getattr(self, k) is not None]
        if given and len(given) < 3:
            raise ValueError(
                "software SPI needs clock_pin, data_pin and select_pin (gpiozero drives a select pin even though "
                "the ring ignores it: give it a free pin); or set none of them and use spi_port / spi_device"
            )
        if not given and self.spi_device >= len(SPI_PORT_PINS[self.spi_port][3]):
            raise ValueError(f"SPI port {self.spi_port} has devices 0..{len(SPI_PORT_PINS[self.spi_port][3]) - 1}")
        return self

    def pins(self) -> dict[str, int]:
        """The GPIO pins the ring's SPI takes, by the key (or port) that sets them."""
        if self.clock_pin is not None and self.data_pin is not None and self.select_pin is not None:
            return {
                "leds.ring.clock_pin": self.clock_pin,
                "leds.ring.data_pin": self.data_pin,
                "leds.ring.select_pin": self.select_pin,
            }
        clock, mosi, miso, selects = SPI_PORT_PINS[self.spi_port]
        port = f"leds.ring (SPI{self.spi_port}"
        return {
            f"{port} clock)": clock,
            f"{port} data)": mosi,
            f"{port} MISO)": miso,
            f"{port} select {self.spi_device})": selects[self.spi_device],
        }


class LedConfig(Section):
    """Status LEDs: none, one, an RGB LED, one LED per state, or an APA102 ring."""

    kind: LedKind = "none"
    pin: BcmPin | None = None
    rgb: RgbPins | None = None
    per_state: PerStatePins | None = None
    ring: RingConfig | None = None
    active_high: bool = True
    brightness: Unit = 1.0

    @model_validator(mode="after")
    def _pins_for_kind(self) -> LedConfig:
        if self.kind == "single" and self.pin is None:
            raise ValueError("kind 'single' needs leds.pin (a BCM pin number)")
        if self.kind == "rgb" and self.rgb is None:
            raise ValueError("kind 'rgb' needs [leds.rgb] with red, green and blue pins")
        if self.kind == "per-state" and self.per_state is None:
            raise ValueError("kind 'per-state' needs [leds.per_state] with a pin per state")
        if self.kind == "apa102" and self.ring is None:
            raise ValueError("kind 'apa102' needs [leds.ring] with at least count (the number of LEDs)")
        return self


class ControlConfig(Section):
    """The local control socket that ``kiosk status``, ``press``, ``say`` and ``events`` talk to."""

    socket: Path = Path("/run/kiosk/control.sock")
    socket_mode: Annotated[int, Field(ge=0, le=0o777)] = 0o660

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError as exc:
                raise ValueError('must be an octal mode such as "0660"') from exc
        return value

    @field_serializer("socket_mode")
    def _show_octal(self, value: int) -> str:
        return f"{value:04o}"


class MetricsConfig(Section):
    """Prometheus metrics: over HTTP, and/or as a file for node_exporter's textfile collector."""

    listen: str | None = None
    textfile: Path | None = None
    textfile_interval_s: Annotated[float, Field(ge=1, le=3600)] = 15.0

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_listen(value)
        return value

    @field_validator("textfile")
    @classmethod
    def _prom_suffix(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".prom":
            raise ValueError("must end in .prom (node_exporter's textfile collector reads only *.prom files)")
        return value


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``metrics.listen`` into (host, port): "PORT" and ":PORT" mean 127.0.0.1; "[::1]:PORT" for IPv6.

    Raises ValueError naming the expected shape.
    """
    shape = 'expected "127.0.0.1:9101" (HOST:PORT, [IPv6]:PORT, or a bare PORT for 127.0.0.1)'
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535; {shape}")
    if any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"{value!r}: not a host; {shape}")
    return host, int(port)


class DaemonConfig(Section):
    """Where the daemon keeps state, and how much it logs."""

    state_dir: Path = Path("/var/lib/kiosk")
    log_level: LogLevel = "info"
    recycle_rss_mb: Annotated[int, Field(ge=0, le=65536)] = 400


#: Words on the screen that ``[screen.labels]`` may replace (the page's language is ``screen.language``).
SCREEN_LABELS: frozenset[str] = frozenset(
    {"ready", "connecting", "listening", "thinking", "speaking", "ending", "failure", "offline"}
    | {"start", "end", "send", "placeholder", "visitor", "agent"}
)


class ScreenConfig(Section):
    """The visitor-facing page (``kiosk screen``): where it listens, what it says, who may reach it."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8780
    allow_remote: bool = False
    token_file: Path | None = None
    token_env: str | None = None
    welcome: str = Field(default="Press the button or tap Start to talk to our assistant.", max_length=300)
    language: str = Field(default="en", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    text_input: bool = True
    max_text_chars: Annotated[int, Field(ge=1, le=1000)] = 200
    labels: dict[str, Annotated[str, Field(min_length=1, max_length=80)]] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - SCREEN_LABELS)
        if unknown:
            raise ValueError(f"unknown label {', '.join(unknown)}; known: {', '.join(sorted(SCREEN_LABELS))}")
        return value

    @model_validator(mode="after")
    def _remote_needs_token(self) -> ScreenConfig:
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("set at most one of token_file and token_env")
        if is_loopback(self.bind):
            return self
        if not self.allow_remote:
            raise ValueError(
                f"bind {self.bind!r} is not a loopback address: set allow_remote = true (and a token) to serve the "
                'screen to other machines, or bind = "127.0.0.1"'
            )
        if self.token_file is None and self.token_env is None:
            raise ValueError(f"bind {self.bind!r} serves other machines: set token_file or token_env (an access token)")
        return self


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses; False for anything else (including bad addresses)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KioskConfig(Section):
    """The whole configuration, one section per subsystem."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    broker: BrokerConfig
    audio: AudioConfig = Field(default_factory=AudioConfig)
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    leds: LedConfig = Field(default_factory=LedConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    screen: ScreenConfig = Field(default_factory=ScreenConfig)

    @property
    def text_topic(self) -> Literal["lk.chat", "voice.user_text"]:
        """The topic the agent reads typed text from: ``session.text_topic``, or chosen by the broker's dialect."""
        if self.session.text_topic != "auto":
            return self.session.text_topic
        return "voice.user_text" if self.broker.dialect == "oshara" else "lk.chat"

    @model_validator(mode="after")
    def _pins_once(self) -> KioskConfig:
        users: dict[int, list[str]] = {}
        for key, pin in self.pins().items():
            users.setdefault(pin, []).append(key)
        clashes = [f"GPIO{pin} is used by {' and '.join(keys)}" for pin, keys in users.items() if len(keys) > 1]
        if clashes:
            raise ValueError("; ".join(clashes) + ": give each its own pin (BCM numbers, see README, wiring)")
        return self

    def pins(self) -> dict[str, int]:
        """Every GPIO pin the daemon opens, by the dotted key that sets it (the LED pins of ``leds.kind`` only)."""
        found: dict[str, int] = {}
        for key in ("button_pin", "volume_up_pin", "volume_down_pin", "mute_pin"):
            pin = getattr(self.trigger, key)
            if pin is not None:
                found[f"trigger.{key}"] = pin
        leds = self.leds
        if leds.kind == "single" and leds.pin is not None:
            found["leds.pin"] = leds.pin
        elif leds.kind == "rgb" and leds.rgb is not None:
            found.update({f"leds.rgb.{k}": v for k, v in leds.rgb.model_dump().items()})
        elif leds.kind == "per-state" and leds.per_state is not None:
            found.update({f"leds.per_state.{k}": v for k, v in leds.per_state.model_dump().items() if v is not None})
        elif leds.kind == "apa102" and leds.ring is not None:
            found.update(leds.ring.pins())
        return found
