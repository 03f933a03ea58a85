"""An RTSP camera on loopback for the live-stream tests: FFmpeg encodes a generated clip (30
frames/s, MJPEG) and packetizes it as RTP to a local UDP port; this module answers RTSP
(RFC 2326: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER) and relays those RTP
packets to each playing client over its RTSP connection (interleaved TCP). A SETUP asking for
UDP gets 461, as many cameras answer, and the client falls back to TCP.

``stop`` drops every client and closes the port (the camera goes away), ``start`` opens it
again on the same port, ``stalled`` keeps connections open and sends nothing."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path


class RtspCamera:
    def __init__(self, folder: Path, fps: int = 30, size: str = "320x240"):
        self.ffmpeg = shutil.which("ffmpeg")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        sdp = folder / "camera.sdp"
        self.encoder = subprocess.Popen(
            [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
             "-i", f"testsrc2=size={size}:rate={fps}", "-c:v", "mjpeg", "-huffman", "default",
             "-pix_fmt", "yuvj420p",
             "-q:v", "5", "-f", "rtp", "-sdp_file", str(sdp),
             f"rtp://127.0.0.1:{self.udp.getsockname()[1]}?pkt_size=1200"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            if sdp.exists() and "m=video" in sdp.read_text():
                break
            time.sleep(0.1)
        lines = [
            "m=video 0 RTP/AVP 26" if ln.startswith("m=video") else ln
            for ln in sdp.read_text().splitlines()
            if ln.strip()
        ]
        self.sdp = "\r\n".join(lines + ["a=control:trackID=0"]) + "\r\n"
        self.clients: list[socket.socket] = []  # playing: the packets go to these
        self.synced: set[socket.socket] = set()  # clients past their first frame boundary
        self.conns: list[socket.socket] = []  # every open connection
        self.lock = threading.Lock()
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self.server: socket.socket | None = None
        threading.Thread(target=self._relay, daemon=True).start()

    def url(self, auth: str = "") -> str:
        return f"rtsp://{auth}127.0.0.1:{self.port}/live"

    def start(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(8)
        self.server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        """The camera goes away: its port closes and every client is dropped."""
        if self.server is not None:
            with contextlib.suppress(OSError):  # wakes the accept() a close alone would not
                self.server.shutdown(socket.SHUT_RDWR)
            self.server.close()
            self.server = None
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self.conns.clear()
            self.clients.clear()
            self.synced.clear()

    def close(self) -> None:
        self.stop()
        self.closed.set()
        self.encoder.kill()
        self.encoder.wait(10)
        self.udp.close()

    def _relay(self) -> None:
        while not self.closed.is_set():
            try:
                packet = self.udp.recv(65536)
            except OSError:  # a timeout, or closed
                continue
            if self.stalled.is_set():
                continue
            frame = b"$\x00" + len(packet).to_bytes(2, "big") + packet
            last_of_a_frame = len(packet) > 1 and packet[1] & 0x80  # RTP's marker bit
            with self.lock:
                for c in list(self.clients):
                    if c not in self.synced:  # a new client starts at a whole frame
                        if last_of_a_frame:
                            self.synced.add(c)
                        continue
                    try:
                        c.sendall(frame)
                    except OSError:
                        self.clients.remove(c)

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        """Answer one client's requests; after PLAY it also receives the relayed packets."""
        buf = b""
        try:
            while True:
                while buf.startswith(b"$") and len(buf) >= 4:  # the client's RTCP: skipped
                    size = 4 + int.from_bytes(buf[2:4], "big")
                    if len(buf) < size:
                        break
                    buf = buf[size:]
                if b"\r\n\r\n" not in buf or buf.startswith(b"$"):
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    continue
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, url = lines[0].split(" ")[:2]
                fields = dict(ln.split(":", 1) for ln in lines[1:] if ":" in ln)
                fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
                size = int(fields.get("content-length", 0))
                while len(buf) < size:
                    buf += conn.recv(65536)
                buf = buf[size:]
                self._answer(conn, method, url, fields)
        except OSError:
            return

    def _answer(self, conn: socket.socket, method: str, url: str, fields: dict) -> None:
        status, extra, body = "200 OK", [], ""
        if method == "OPTIONS":
            extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            base = url.rstrip("/") + "/"
            extra += ["Content-Type: application/sdp", f"Content-Base: {base}"]
            body = self.sdp
        elif method == "SETUP":
            if "TCP" not in fields.get("transport", ""):
                status = "461 Unsupported Transport"
            else:
                extra += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 4242"]
        elif method in ("PLAY", "GET_PARAMETER", "TEARDOWN"):
            extra.append("Session: 4242")
        else:
            status = "405 Method Not Allowed"
        reply = [f"RTSP/1.0 {status}", f"CSeq: {fields.get('cseq', '0')}", *extra]
        reply.append(f"Content-Length: {len(body.encode())}")
        with self.lock:
            conn.sendall(("\r\n".join(reply) + "\r\n\r\n" + body).encode())
            if method == "PLAY":
                self.clients.append(conn)
            elif method == "TEARDOWN" and conn in self.clients:
                self.clients.remove(conn)
