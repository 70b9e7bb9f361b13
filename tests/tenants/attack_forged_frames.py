"""Attack class: a compromised sandbox that owns its ZeroMQ socket and writes frames itself.

Only `Policy.trusted()` code can do this (it imports `gc` and `zmq` and finds the live socket);
it stands for a sandbox where the language layer has already been broken. The host must judge
each frame by the channel it arrived on: a capability outside that sandbox's table is refused,
and a frame that does not decode ends that sandbox only.
"""

FORGER = """
import gc

import zmq
from dynworkers.runtime import protocol
from workers import WorkerEntrypoint


def channel():
    for obj in gc.get_objects():
        if isinstance(obj, zmq.Socket) and not obj.closed:
            return obj
    raise LookupError("no live ZeroMQ socket in this sandbox")


def forge_call(capability, method, args):
    sock = channel()
    call = protocol.BindingCall(
        request_id=10 ** 9,
        capability=capability,
        method=method,
        args=protocol.encode([args, {}]),
    )
    sock.send(protocol.encode(call))
    while True:
        reply = protocol.to_sandbox.decode(sock.recv())
        if isinstance(reply, protocol.BindingReply) and reply.request_id == 10 ** 9:
            break
    if reply.ok:
        return {"ok": True, "value": protocol.decode_plain(reply.value)}
    return {"ok": False, "kind": reply.error.kind, "message": reply.error.message}


class Default(WorkerEntrypoint):
    def forge(self, capability, method, args):
        return forge_call(capability, method, args)

    def garbage(self):
        channel().send(b"\\xc1\\xff not msgpack at all")
        return "sent"

    def hello_again(self):
        channel().send(protocol.encode(protocol.Hello(token=b"guessed token", pid=1)))
        return "sent"

    def put(self, key, value):
        return self.env.KV.put(key, value)

    def get(self, key):
        return self.env.KV.get(key)

    def ping(self):
        return "pong"
"""
