"""The visitor-facing screen: a local web page showing the kiosk's state and live captions.

A companion process (``kiosk screen``) follows the daemon's control socket (``events``) and serves the page; the
page's button and text box go back through the same socket (``press``, ``say``). The daemon never serves HTTP and the
page's process never holds a broker key or a LiveKit token.
"""
