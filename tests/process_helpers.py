"""Child processes that get Ctrl-C as they would on a terminal."""

from __future__ import annotations

import signal


def ctrl_c_as_on_a_terminal() -> None:
    """Popen's preexec_fn: SIGINT back to its default. A shell starts background jobs (`pytest ... &`)
    with SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt
    handler: a test that sends SIGINT would wait for an exit that never comes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
