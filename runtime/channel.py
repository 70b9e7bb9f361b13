"""The host's end of one sandbox's channel.

Runs in the host, on the supervisor's event loop. Each sandbox gets its own ZeroMQ PAIR socket,
bound by the host at a fresh path in a private directory; a PAIR socket admits one peer, and the
peer must prove itself with the token the host gave the zygote for that fork. Whatever arrives on
this socket is from that sandbox: tenant identity is the channel, never a field of a frame.

The channel keeps `{request_id: Future}` for calls in flight. Binding calls and log records from
the sandbox are handed to callbacks. A frame that does not decode, or a Hello with the wrong
token, calls `on_broken`: the owner ends that sandbox. When the peer dies, `fail_all` fails every
pending call at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable

import msgspec
import zmq

from dynworkers.runtime import protocol


class Channel:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        run_dir: str,
        sandbox_id: int,
        max_frame: int,
        on_message: Callable[[protocol.Message], None],
        on_broken: Callable[[str], None],
    ) -> None:
        self.path = os.path.join(run_dir, f"s{sandbox_id}")
        self.endpoint = f"ipc://{self.path}"
        self.token = secrets.token_bytes(16)
        self.socket = context.socket(zmq.PAIR)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.frame_limit(max_frame))
        self.socket.bind(self.endpoint)
        self.on_message = on_message
        self.on_broken = on_broken
        self.pending: dict[int, asyncio.Future[protocol.Message]] = {}
        # The loop, kept: on Python 3.11 each asyncio.get_running_loop() is a getpid() system call
        # (its fork check), which the profile of the front door found at a fifth of the event
        # loop thread's time, counting aiohttp's calls.
        self._loop = loop = asyncio.get_running_loop()
        self.hello: asyncio.Future[protocol.Hello] = loop.create_future()
        self.ready: asyncio.Future[protocol.Ready] = loop.create_future()
        self.specialised: asyncio.Future[protocol.Specialised] | None = None
        self.next_id = 0
        self.closed = False
        # ZeroMQ's FD is edge-triggered: it signals "look at EVENTS", so every wake-up drains the
        # socket, and so does a turn after each send (a send can consume the edge).
        self._fd: int = self.socket.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._loop.add_reader(self._fd, self._drain)

    def send(self, message: protocol.Message) -> None:
        data = protocol.encode(message)
        try:
            # Zero-copy only for a large frame: below pyzmq's copy threshold it copies anyway,
            # after building a Frame object for nothing (0.3 us a send).
            self.socket.send(data, zmq.NOBLOCK, copy=len(data) < zmq.COPY_THRESHOLD)
        except zmq.Again:
            self.on_broken("stopped reading its channel (send queue full)")
            return
        if int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._loop.call_soon(self._drain)

    def request(self, build: Callable[[int], protocol.Message]) -> asyncio.Future[protocol.Message]:
        """Send the message `build(request_id)` and return the future of its reply."""
        self.next_id += 1
        future: asyncio.Future[protocol.Message] = self._loop.create_future()
        self.pending[self.next_id] = future
        self.send(build(self.next_id))
        return future

    def _drain(self) -> None:
        # Woken by the FD (or by `send` having seen POLLIN), a frame most likely waits: the first
        # recv goes without a check. After each frame EVENTS says whether another waits, so that
        # the usual drain raises no zmq.Again (an exception built in Python); each check costs
        # libzmq a command poll, so checking before the first frame too was dearer (a send,
        # poll and drain measured 14-16 us of CPU this way, 17-28 us either other way).
        socket = self.socket
        while not self.closed:
            try:
                frame = socket.recv(zmq.NOBLOCK)
            except zmq.ZMQError:  # zmq.Again: nothing after all; or closed under us
                return
            try:
                message = protocol.from_sandbox.decode(frame)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.on_broken(f"sent a frame that does not decode ({exc})")
                return
            self._dispatch(message)
            if self.closed:
                return
            try:
                events: int = socket.getsockopt(zmq.EVENTS)  # type: ignore[assignment]
            except zmq.ZMQError:
                return
            if not events & zmq.POLLIN:
                return

    def _dispatch(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Returned | protocol.Failed):
            future = self.pending.pop(message.request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, protocol.Specialised):
            if self.specialised is not None and not self.specialised.done():
                self.specialised.set_result(message)
        elif isinstance(message, protocol.Hello):
            if self.hello.done() or not secrets.compare_digest(message.token, self.token):
                self.on_broken("sent a Hello with a wrong token or twice")
                return
            self.hello.set_result(message)
        elif isinstance(message, protocol.Ready):
            if not self.ready.done():
                self.ready.set_result(message)
        else:
            self.on_message(message)

    def fail_all(self, error: BaseException) -> None:
        for future in (self.hello, self.ready, self.specialised, *self.pending.values()):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here so that nobody awaiting it is not an error
        self.pending.clear()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        self.socket.close(linger=0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
