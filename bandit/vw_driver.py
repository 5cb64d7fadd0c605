"""VW's command-line driver in a process of its own: `python -m bandit.vw_driver` runs one driver
command a line of its standard input (a JSON list of arguments) and answers each with a line of its
standard output (JSON: null, or VW's error message). It imports only vowpal-wabbit-next.

The driver may not run in a process that should stop on Ctrl-C: vowpal-wabbit-next 0.7.0's
``run_cli_driver`` installs a C-level SIGINT handler of its own (``std::signal`` in its
``src/cpp/main.cpp``) and never puts the one it replaced back. From then on Python's handler is
gone while ``signal.getsignal`` still names it: Ctrl-C was swallowed, in every thread. During a
run that handler ends VW's learning early and the truncated model is saved as if it were whole;
before the driver starts it skips the run and leaves no model at all. Its own process runs in a
session of its own, so a Ctrl-C at the terminal reaches only the process that asked for the run,
whose own handler decides what an interrupt means there.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

from vowpal_wabbit_next import CLIError, run_cli_driver

DRIVER_MODULE = "bandit.vw_driver"


class DriverError(Exception):
    """VW's driver refused its arguments or failed on its input: VW's own message."""


class DriverProcess:
    """One `python -m bandit.vw_driver` process; it ends with ``close`` (or its standard input)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self._process = subprocess.Popen(
            [sys.executable, "-m", DRIVER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, args: Sequence[str]) -> None:
        """VW's driver on ``args``, as `vw ARGS` would run them; raises DriverError with VW's message."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None  # both are pipes
        stdin.write(json.dumps(list(args)) + "\n")
        stdin.flush()
        answer = stdout.readline()
        if not answer:
            raise RuntimeError(f"VW's driver process ended with exit code {self._process.wait()} before it answered")
        error = json.loads(answer)
        if error is not None:
            raise DriverError(error)

    def ended(self) -> bool:
        return self._process.poll() is not None

    def close(self) -> None:
        """End the process at once: it may be half-way through a run no one waits for any more (the
        caller was interrupted), and it keeps nothing worth finishing."""
        self._process.kill()
        self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            # A write cut short by the interrupt may be left in the buffer, to a pipe no one reads now.
            with contextlib.suppress(BrokenPipeError):
                if pipe is not None:
                    pipe.close()


_shared: DriverProcess | None = None
_shared_lock = threading.Lock()


@contextlib.contextmanager
def shared_driver() -> Iterator[DriverProcess]:
    """This process's driver process, for one caller at a time: started at the first use and kept
    for the next, so a process pays for one start (0.17 s of CPU), not one a learning round (an
    in-process simulation learns every 250 decisions). A caller that ends otherwise than by VW's
    answer (an interrupt, a broken pipe) ends it too: it may be half-way through a run no one waits
    for. A forked child starts its own (the parent's pipes are the parent's)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.owner != os.getpid() or _shared.ended():
            _shared = DriverProcess()
        try:
            yield _shared
        except DriverError:
            raise
        except BaseException:
            _shared.close()
            _shared = None
            raise


def main() -> None:
    for line in sys.stdin:
        try:
            run_cli_driver(json.loads(line), onethread=True)
        except CLIError as error:
            answer: str | None = str(error)
        else:
            answer = None
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
