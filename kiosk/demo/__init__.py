"""``kiosk demo``: the sandbox and the daemon together on one machine, with or without a sound card."""
