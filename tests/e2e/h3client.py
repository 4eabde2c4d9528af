"""A real HTTP/3 client (aioquic) for the QUIC evidence scripts, plus an HTTPS/TCP client for
the same requests, a small HTTP/3 origin server (the destination of `sni_filter` flows) and the
stack driver (`sase-quic-e2e serve`, commands on stdin).

The QUIC client uses a *connected* UDP socket, as browsers do, so that an ICMP port unreachable
answer reaches it as ECONNREFUSED at once (an unconnected socket never sees it and would wait for
its handshake timeout): that is what makes the `block` mode's fallback immediate.
"""

import asyncio
import json
import socket
import ssl
import subprocess
import time
import http.client

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated


class QuicRefused(Exception):
    """The QUIC connection could not be set up: ICMP refusal, CONNECTION_CLOSE, or timeout."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind} {detail}".strip())
        self.kind = kind


class H3Protocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.streams = {}
        self.failed = self._loop.create_future()
        # Read later or not at all: never "exception was never retrieved".
        self.failed.add_done_callback(lambda f: f.cancelled() or f.exception())

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        # aioquic reports a peer's CONNECTION_CLOSE only after its draining period (3 PTO);
        # the refusal itself is what matters here, so it counts when it arrives.
        close = getattr(self._quic, "_close_event", None)
        if close is not None and not self.failed.done():
            self.failed.set_exception(
                QuicRefused("closed", f"code={close.error_code:#x} reason={close.reason_phrase!r}")
            )

    def error_received(self, exc):
        # ICMP port unreachable on the connected socket.
        if not self.failed.done():
            self.failed.set_exception(QuicRefused("icmp", repr(exc)))

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            err = QuicRefused(
                "closed", f"code={event.error_code:#x} reason={event.reason_phrase!r}"
            )
            if not self.failed.done():
                self.failed.set_exception(err)
            for st in self.streams.values():
                if not st["fut"].done():
                    st["fut"].set_exception(err)
            return
        for ev in self.h3.handle_event(event):
            st = self.streams.get(getattr(ev, "stream_id", None))
            if st is None:
                continue
            if isinstance(ev, HeadersReceived):
                st["headers"].extend(ev.headers)
            elif isinstance(ev, DataReceived):
                st["body"] += ev.data
            if getattr(ev, "stream_ended", False) and not st["fut"].done():
                headers = {k.decode(): v.decode() for k, v in st["headers"]}
                st["fut"].set_result(
                    {"status": int(headers.get(":status", "0")), "headers": headers, "body": st["body"]}
                )

    async def request(self, method, authority, path, headers=(), body=b"", timeout=10.0):
        sid = self._quic.get_next_available_stream_id()
        hdrs = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ] + [(k.lower().encode(), v.encode()) for k, v in headers]
        if body:
            hdrs.append((b"content-length", str(len(body)).encode()))
        fut = self._loop.create_future()
        self.streams[sid] = {"fut": fut, "headers": [], "body": b""}
        self.h3.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(fut, timeout)


async def h3_connect(host, port, sni, cafile=None, handshake_timeout=5.0, verify=True,
                     version=None, big_hello=False):
    """Opens an HTTP/3 connection; raises QuicRefused when it cannot be set up. `version`
    picks the QUIC version of the first Initial (QUIC v2: 0x6b3343cf); `big_hello` pads the
    ClientHello past one packet (aioquic's quantum-readiness test: what post-quantum key
    shares do), so the server side must reassemble CRYPTO frames across packets."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=sni)
    if version is not None:
        config.original_version = version
    config.quantum_readiness_test = big_hello
    if verify:
        config.load_verify_locations(cafile)
    else:
        config.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect((host, port))
    sock.setblocking(False)
    _, proto = await loop.create_datagram_endpoint(
        lambda: H3Protocol(QuicConnection(configuration=config)), sock=sock
    )
    proto.connect((host, port))
    connected = asyncio.ensure_future(proto.wait_connected())
    done, _ = await asyncio.wait(
        [connected, proto.failed], timeout=handshake_timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if not done:
        abandon(proto, connected)
        raise QuicRefused("timeout", f"no handshake in {handshake_timeout}s")
    if proto.failed.done() and proto.failed.exception() is not None:
        abandon(proto, connected)
        raise proto.failed.exception()
    try:
        connected.result()
    except ConnectionError as e:
        abandon(proto, connected)
        raise QuicRefused("closed", repr(e))
    return proto


def abandon(proto, connected):
    """Gives up a connection attempt without letting aioquic's timers touch the closed socket."""
    connected.cancel()
    if proto._timer is not None:
        proto._timer.cancel()
        proto._timer = None
    proto._quic.get_timer = lambda: None
    proto._transport.close()


async def h3_close(proto):
    proto.close()
    try:
        await asyncio.wait_for(proto.wait_closed(), 2)
    except Exception:
        pass


def tcp_request(host, port, cafile, method, authority, path, headers=(), body=b"", timeout=10.0):
    """One HTTPS/1.1 request over TCP (a new connection)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    hdrs = {"Host": authority}
    hdrs.update(dict(headers))
    conn.request(method, path, body=body or None, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    out = {"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()}, "body": data}
    conn.close()
    return out


class Stack:
    """`sase-quic-e2e serve`: control plane + enrolled edge + sample app, driven on stdin."""

    def __init__(self, bin_dir, work_dir, policy_file):
        self.proc = subprocess.Popen(
            [f"{bin_dir}/sase-quic-e2e", "serve", "--bin-dir", bin_dir, "--work-dir", work_dir,
             "--policy", policy_file],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"stack did not start: {line!r}")
        self.info = dict(kv.split("=", 1) for kv in line.split()[1:])

    def addr(self, key):
        host, port = self.info[key].rsplit(":", 1)
        return host, int(port)

    def _ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"stack ended on {command!r}")
        return line.rstrip("\n")

    def policy(self, policy, path):
        with open(path, "w") as f:
            json.dump(policy, f)
        answer = self._ask(f"policy {path}")
        if not answer.startswith("applied "):
            raise RuntimeError(answer)
        return int(answer.split()[1])

    def events(self):
        answer = self._ask("events")
        return json.loads(answer.split(" ", 1)[1])

    def stop(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def gen_cert(names, cert_path, key_path):
    """A self-signed certificate for `names` (the HTTP/3 origin behind the relay)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


class OriginProtocol(QuicConnectionProtocol):
    """HTTP/3 origin: answers every request 200 `origin <sni>`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None

    def quic_event_received(self, event):
        if self.h3 is None:
            self.h3 = H3Connection(self._quic)
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_ended or (
                isinstance(ev, DataReceived) and ev.stream_ended
            ):
                body = b"h3 origin behind the relay"
                self.h3.send_headers(
                    ev.stream_id,
                    [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                )
                self.h3.send_data(ev.stream_id, body, end_stream=True)
                self.transmit()


async def start_origin(cert, key):
    """Starts the HTTP/3 origin on an ephemeral loopback port; returns (server, port)."""
    from aioquic.asyncio import serve

    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(cert, key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = await serve("127.0.0.1", port, configuration=config, create_protocol=OriginProtocol)
    return server, port


def now_ms():
    return time.monotonic() * 1000.0
