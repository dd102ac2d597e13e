"""Keeps the local stack's processes running, as compose's `restart: unless-stopped` does.

honcho's Manager stops every process when one exits; this runs them as it does (each in its own session, output
prefixed by honcho's Printer) but restarts a child that exits, after a backoff, until SIGINT, SIGTERM or SIGHUP stops
them all: SIGTERM to each child's process group, SIGKILL after a grace period.
"""

from __future__ import annotations

import datetime
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from honcho.colour import get_colours
from honcho.printer import Message, Printer

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
# A child that stayed up this long before exiting counts as healthy: its next restart waits FIRST_DELAY_S again.
STABLE_AFTER_S = 60.0
# Longer than the services' own graceful shutdown (10 s in shared/server.py).
GRACE_S = 15.0
SYSTEM = "system"


def restart_delay(streak: int, uptime_s: float) -> tuple[int, float]:
    """The new streak of quick failures and the wait before restarting a child that exited after `uptime_s`.

    Each quick failure in a row doubles the wait (1, 2, 4 ... capped at 30 s); a child that had stayed up
    STABLE_AFTER_S starts a new streak.
    """
    streak = 1 if uptime_s >= STABLE_AFTER_S else streak + 1
    return streak, min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (streak - 1))


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"with signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"with signal {-returncode}"
    return f"with code {returncode}"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None
    colour: str
    process: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    started: float = 0.0
    streak: int = 0
    restarts: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Runs children in the foreground until SIGINT, SIGTERM or SIGHUP (terminal closed).

    `run()` returns 128 + that signal's number, as a shell reports a process it ended.
    """

    cwd: Path
    printer: Printer = field(default_factory=lambda: Printer(sys.stdout))
    children: dict[str, Child] = field(default_factory=dict)
    _events: queue.Queue[tuple[Child, bytes | None]] = field(default_factory=queue.Queue)
    _colours: Iterator[str] = field(default_factory=get_colours)
    _signal: int | None = None
    _stopping: bool = False

    def add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.children[name] = Child(name, argv, env, next(self._colours))
        self.printer.width = max(len(SYSTEM), *(len(n) for n in self.children))

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            for child in self.children.values():
                self._start(child)
            while self._signal is None:
                self._handle_events()
                now = time.monotonic()
                for child in self.children.values():
                    if child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
            self._say(f"{signal.Signals(self._signal).name} received, stopping every process")
        finally:
            self._stop_all()
        return 128 + self._signal

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signal = self._signal or signum

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.started = time.monotonic()
        child.process = subprocess.Popen(
            child.argv,
            cwd=self.cwd,
            env=child.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.reader = threading.Thread(target=self._read, args=(child, child.process), daemon=True)
        child.reader.start()
        self._say(f"{child.name} started (pid={child.process.pid})")

    def _read(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        """Forward a child's output lines, then its exit (None), to the main loop."""
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            self._events.put((child, line))
        process.stdout.close()
        process.wait()
        self._events.put((child, None))

    def _handle_events(self, timeout_s: float = 0.1) -> None:
        try:
            child, line = self._events.get(timeout=timeout_s)
        except queue.Empty:
            return
        if line is not None:
            self._print(child.name, line, child.colour)
        elif not self._stopping:
            self._exited(child)
        else:
            assert child.process is not None
            self._say(f"{child.name} stopped {exit_reason(child.process.returncode)}")

    def _exited(self, child: Child) -> None:
        assert child.process is not None
        uptime = time.monotonic() - child.started
        child.streak, delay = restart_delay(child.streak, uptime)
        child.restarts += 1
        child.restart_at = time.monotonic() + delay
        self._say(
            f"{child.name} exited {exit_reason(child.process.returncode)} after {uptime:.1f} s; "
            f"restarting in {delay:g} s (restart {child.restarts})"
        )

    def _stop_all(self) -> None:
        self._stopping = True
        running = [c for c in self.children.values() if c.process is not None and c.process.poll() is None]
        self._signal_groups(running, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while any(c.process.poll() is None for c in running) and time.monotonic() < deadline:
            self._handle_events()
        self._signal_groups([c for c in running if c.process.poll() is None], signal.SIGKILL)
        for child in running:
            child.process.wait()
            child.reader.join(timeout=1.0)
        while not self._events.empty():
            self._handle_events()

    def _signal_groups(self, children: list[Child], signum: signal.Signals) -> None:
        """Signal each child's process group (its own session), so nothing it started is left behind."""
        for child in children:
            self._say(f"sending {signum.name} to {child.name} (pid {child.process.pid})")
            try:
                os.killpg(child.process.pid, signum)
            except ProcessLookupError:
                pass

    def _say(self, text: str) -> None:
        self._print(SYSTEM, text, None)

    def _print(self, name: str, data: bytes | str, colour: str | None) -> None:
        try:
            self.printer.write(Message(type="line", data=data, time=datetime.datetime.now(), name=name, colour=colour))
        except OSError:  # the terminal or pipe is gone (`make run | tee` after Ctrl-C): keep supervising, unheard
            pass
