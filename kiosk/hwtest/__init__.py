"""Hardware checks an installer runs from SSH with the daemon stopped: ``kiosk test mic|speaker|leds|button``.

Each check reuses the daemon's own parts (the audio capture and playback paths, the LED pattern table, the button
trigger), so what it shows is what the daemon would do with the same config. :mod:`kiosk.hwtest.holder` says who
holds a device when one cannot be opened.
"""
