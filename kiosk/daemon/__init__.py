"""The live daemon: the session driver, its observers, the control socket and ``run()`` that wires them."""
