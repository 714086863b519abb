"""The ``kiosk`` subcommands; each module exposes ``main(argv) -> int``."""
