"""One child process speaking JSON lines on stdin and stdout: spawned, read, written, and restarted with backoff.

What the lines mean is the subclass's (`StdioUpstream`): it opens each run of the child (`_open`: a handshake, or
a discover), handles each message the child writes (`_dispatch`), and fails what was in flight when the child
goes (`_fail_pending`). A child that declines what it was started for (`Declined` from `_open`) is stopped, not
restarted.
"""

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from integrations.errors import UpstreamUnavailable

logger = logging.getLogger(__name__)

Message = dict[str, Any]
MAX_LINE = 16 * 1024 * 1024


class Declined(Exception):
    """Raised by `_open` when the child does not serve what it was started for: it is stopped and stays stopped."""


class Unsendable(ValueError):
    """Raised when a message holds a lone UTF-16 surrogate: JSON can spell one, but a child reads UTF-8 lines."""

    def __init__(self) -> None:
        super().__init__("a string holds a lone UTF-16 surrogate, which a stdio server cannot read as UTF-8")


def line_of(message: Message) -> bytes:
    """One message as the line a child reads: UTF-8 JSON (the spec's encoding for stdio)."""
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError as exc:
        raise Unsendable from exc


class SupervisedChild:
    """Spawns `command` and keeps it running; `ready` while a run of it is open."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.name = name
        self._command = list(command)
        self._env = dict(env) if env else None
        self._cwd = cwd
        self._max_backoff = max_backoff
        self._process: Process | None = None
        self._ready = anyio.Event()
        self._write_lock = anyio.Lock(fast_acquire=True)  # one writer at a time; no loop turn when it is free
        self._closing = False
        self._output_lost = False  # the running child closed its stdout and was killed for it
        self.restarts = 0
        self.last_exit: str | None = None
        self.declined: str | None = None  # why the child does not serve what it was started for, once it said so
        self._decided = anyio.Event()  # set once the child was ready, or declined
        self._task_group: TaskGroup | None = None

    # -- what the subclass says the lines mean ------------------------------------------------------

    async def _open(self) -> None:
        """Start a run of the child (it is ready once this returns); raise `Declined` if it cannot serve."""
        raise NotImplementedError

    async def _dispatch(self, message: Message) -> None:
        raise NotImplementedError

    def _fail_pending(self, reason: str) -> None:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        task_group.start_soon(self._supervise)

    async def wait_ready(self, within: float) -> None:
        with anyio.move_on_after(within):
            await self._ready.wait()
        if not self._ready.is_set():
            raise UpstreamUnavailable(self.name, self.last_exit or "the server process is still starting")

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def aclose(self) -> None:
        self._closing = True
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with anyio.move_on_after(5):
                await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()

    async def _supervise(self) -> None:
        backoff = 0.25
        while not self._closing:
            try:
                await self._run_once()
                backoff = 0.25
            except Declined as exc:  # not a failure to restart for: the command does not serve what it was asked
                self.declined = str(exc)
                logger.info("Upstream %s declined (%s); it is not restarted", self.name, exc)
                self._fail_pending(self.declined)
                self._decided.set()
                return
            except Exception as exc:
                self.last_exit = f"{type(exc).__name__}: {exc}"
                logger.warning("Upstream %s failed: %s", self.name, self.last_exit)
            self._ready = anyio.Event()
            self._fail_pending(self.last_exit or "the server process exited")
            if self._closing:
                return
            self.restarts += 1
            logger.warning("Restarting upstream %s in %.2fs", self.name, backoff)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _run_once(self) -> None:
        process = await anyio.open_process(self._command, env=self._env, cwd=self._cwd)
        self._process = process
        self._output_lost = False
        refused: Declined | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain_stderr, process)
                tg.start_soon(self._read, process)
                try:
                    await self._open()
                except Declined as exc:  # raised below, not wrapped in the task group's ExceptionGroup
                    refused = exc
                if refused is None:
                    self._ready.set()
                    self._decided.set()
                    logger.info("Upstream %s is ready (pid %s)", self.name, process.pid)
                    code = await process.wait()
                    if self._output_lost:
                        self.last_exit = "the server process closed its output"
                    else:
                        self.last_exit = f"the server process exited with code {code}"
                tg.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()
        if refused is not None:
            raise refused

    async def _drain_stderr(self, process: Process) -> None:
        if process.stderr is None:
            return
        with contextlib.suppress(anyio.DelimiterNotFound):  # a line past MAX_LINE ends the logging, not the child
            async for line in _lines(process.stderr):
                logger.info("[%s] %s", self.name, line.decode(errors="replace").rstrip())

    async def _read(self, process: Process) -> None:
        if process.stdout is None:
            return
        try:
            async for line in _lines(process.stdout):
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    logger.warning("Upstream %s wrote a line that is not JSON: %.200r", self.name, line)
                    continue
                if isinstance(message, dict):
                    await self._dispatch(message)
        except anyio.DelimiterNotFound:
            logger.error("Upstream %s wrote a line over %d bytes; restarting it", self.name, MAX_LINE)
            process.kill()
            return
        await self._output_closed(process)

    async def _output_closed(self, process: Process) -> None:
        """The child closed its stdout: it usually exits next; one that lives on can answer nothing, so restart it."""
        with anyio.move_on_after(1.0):
            await process.wait()
        if process.returncode is None:
            self._output_lost = True
            logger.warning("Upstream %s closed its output but kept running; restarting it", self.name)
            process.kill()

    async def _write(self, message: Message | bytes) -> None:
        """Send one message (or the line `line_of` made of it) to the child."""
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise UpstreamUnavailable(self.name, self.last_exit or "the server process is not running")
        data = message if isinstance(message, bytes) else line_of(message)
        async with self._write_lock:
            try:
                await process.stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise UpstreamUnavailable(self.name, "the server process closed its input") from exc


async def _lines(output: ByteReceiveStream) -> AsyncIterator[bytes]:
    """The lines a child writes to one of its pipes until it closes it; raises `DelimiterNotFound` past `MAX_LINE`."""
    stream = BufferedByteReceiveStream(output)
    while True:
        try:
            yield await stream.receive_until(b"\n", MAX_LINE)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            return
