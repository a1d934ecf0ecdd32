"""HTTP/3 requests with aioquic (a second, independent QUIC and QPACK implementation), one
connection, one request after the other; prints one JSON object per response.

Usage: aioquic_get.py --ca CERT.pem --connect 127.0.0.1:PORT URL [URL ...]
(the URLs' host is the TLS server name and `:authority`; the address is where UDP goes)
"""

import argparse
import asyncio
import json
import ssl
import sys
from urllib.parse import urlparse

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.waiting = {}

    async def get(self, url, headers):
        u = urlparse(url)
        stream = self._quic.get_next_available_stream_id()
        fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", u.netloc.encode()),
                  (b":path", (u.path or "/").encode() + (b"?" + u.query.encode() if u.query else b""))]
        fields += [(k.lower().encode(), v.encode()) for k, v in headers]
        self.http.send_headers(stream, fields, end_stream=True)
        done = asyncio.get_running_loop().create_future()
        self.waiting[stream] = {"headers": [], "body": b"", "done": done}
        self.transmit()
        return await asyncio.wait_for(done, 10)

    def quic_event_received(self, event):
        for e in self.http.handle_event(event):
            w = self.waiting.get(getattr(e, "stream_id", None))
            if w is None:
                continue
            if isinstance(e, HeadersReceived):
                w["headers"] += [(k.decode(), v.decode()) for k, v in e.headers]
            elif isinstance(e, DataReceived):
                w["body"] += e.data
            if getattr(e, "stream_ended", False) and not w["done"].done():
                w["done"].set_result(w)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ca", required=True)
    p.add_argument("--connect", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("urls", nargs="+")
    a = p.parse_args()
    host, port = a.connect.rsplit(":", 1)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_REQUIRED,
                               server_name=urlparse(a.urls[0]).hostname)
    config.load_verify_locations(a.ca)
    headers = [tuple(h.split(": ", 1)) for h in a.header]
    async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
        for url in a.urls:
            r = await client.get(url, headers)
            fields = [h for h in r["headers"] if not h[0].startswith(":")]
            status = next(int(v) for k, v in r["headers"] if k == ":status")
            print(json.dumps({"url": url, "status": status, "headers": fields,
                              "body": r["body"].decode("utf-8", "replace"),
                              "alpn": client._quic.tls.alpn_negotiated}))
            sys.stdout.flush()


asyncio.run(main())
