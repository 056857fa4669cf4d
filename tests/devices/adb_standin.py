"""A loopback stand-in for the adb *server*, so adbutils can be tested without a phone.

It speaks the smart-socket protocol adbutils uses (4-hex-digit length-prefixed requests, OKAY /
FAIL + length-prefixed strings): ``host:version``, ``host:devices(-l)``, ``host:tport:serial:``,
``host:transport:``, ``host-serial:S:features|get-state|get-serialno``, ``shell:`` (v1) and
``shell,v2:`` (framed stdout/stderr/exit) and ``sync:`` (SEND/DATA/DONE, RECV, STAT, LIST, QUIT).

The "device" is a directory: device paths under ``/data/`` map into it, pushed files keep their
mode, and shell commands run in ``/bin/sh`` with ``getprop`` and a fake ``perfetto`` on PATH (the
fake perfetto writes a real wire-format power-rails trace at a constant, known power). Every loop
is bounded; the server stops by itself after ``lifetime_s``.
"""

from __future__ import annotations

import os
import shlex
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

VERSION = 41  # adb 1.0.41: adbutils then uses host:tport:serial:

GETPROP = """#!/bin/sh
case "$1" in
{cases}
  *) echo "" ;;
esac
"""

PERFETTO = '''#!{python}
"""Fake perfetto: --background prints a daemon pid; the daemon records uptime and writes the trace on SIGTERM."""
import os, signal, subprocess, sys, time
args = sys.argv[1:]
out = args[args.index("-o") + 1]
if "--daemon" not in args:
    p = subprocess.Popen([sys.executable, __file__, "--daemon", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    print(p.pid)
    sys.exit(0)
from devices.android.power import encode_power_rails
POWER_W = {power_w}
def uptime_ms():
    return float(open("/proc/uptime").read().split()[0]) * 1000.0
t_start = uptime_ms()
samples = []
done = []
signal.signal(signal.SIGTERM, lambda *_: done.append(1))
end = time.monotonic() + 120
while not done and time.monotonic() < end:
    t = uptime_ms()
    # two rails sharing the power equally; energy counters in uWs since an arbitrary origin
    for idx in (0, 1):
        samples.append((idx, int(t), int(1e9 + (t - t_start) * 1e-3 * POWER_W / 2 * 1e6)))
    time.sleep(0.01)
with open(out, "wb") as f:
    f.write(encode_power_rails({{0: "S4M_VDD_CPUCL0", 1: "S2S_VDD_G3D"}}, samples))
'''


class AdbStandin:
    """``AdbStandin(root, devices={"EMU01": "device"})``; ``start()`` returns the port."""

    def __init__(self, root: Path, devices: dict[str, str] | None = None, *, props: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, perfetto_power_w: float | None = None,
                 features: str = "shell_v2,cmd,stat_v2,fixed_push_mkdir", lifetime_s: float = 120.0):
        self.root = Path(root)
        self.devices = dict(devices) if devices is not None else {"EMU01": "device"}
        self.features = features
        self.env = dict(env or {})
        self.lifetime_s = lifetime_s
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(8)
        self._srv.settimeout(0.2)
        self.port = self._srv.getsockname()[1]
        bindir = self.root / "system" / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        (self.root / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "data" / "misc" / "perfetto-traces").mkdir(parents=True, exist_ok=True)
        props = {"ro.product.cpu.abi": "x86_64", "ro.product.model": "Standin", "ro.build.version.release": "14",
                 **(props or {})}
        cases = "\n".join(f"  {shlex.quote(k)}) echo {shlex.quote(v)} ;;" for k, v in props.items())
        self._script(bindir / "getprop", GETPROP.format(cases=cases))
        if perfetto_power_w is not None:
            self._script(bindir / "perfetto", PERFETTO.format(python=sys.executable, power_w=perfetto_power_w))
        self._thread = threading.Thread(target=self._serve, daemon=True, name="adb-standin")

    @staticmethod
    def _script(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o755)

    def start(self) -> int:
        self._thread.start()
        return self.port

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> AdbStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- server
    def _serve(self) -> None:
        end = time.monotonic() + self.lifetime_s
        workers = []
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            t = threading.Thread(target=self._client, args=(conn,), daemon=True)
            t.start()
            workers.append(t)
        self._srv.close()
        for t in workers:
            t.join(timeout=2)

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        try:
            serial = None
            for _ in range(8):  # a connection carries at most a few chained requests
                req = self._request(conn)
                if req is None:
                    return
                self.requests.append(req)
                if req == "host:version":
                    return self._okay(conn, self._block(f"{VERSION:04x}"))
                if req in ("host:devices", "host:devices-l"):
                    long = req.endswith("-l")
                    lines = "".join(f"{s}\t{st}" + (f" product:standin model:Standin transport_id:{i + 1}" if long else "")
                                    + "\n" for i, (s, st) in enumerate(self.devices.items()))
                    return self._okay(conn, self._block(lines))
                if req.startswith(("host:tport:serial:", "host:transport:")):
                    serial = req.rsplit(":", 1)[1]
                    problem = self._unusable(serial)
                    if problem:
                        return self._fail(conn, problem)
                    conn.sendall(b"OKAY" + (struct.pack("<Q", 1) if req.startswith("host:tport") else b""))
                    continue
                if req.startswith("host-serial:"):
                    _, s, what = req.split(":", 2)
                    if s not in self.devices:
                        return self._fail(conn, f"device '{s}' not found")
                    value = {"features": self.features, "get-state": self.devices[s],
                             "get-serialno": s}.get(what)
                    if value is None:
                        return self._fail(conn, f"unsupported {what}")
                    return self._okay(conn, self._block(value))
                if serial is None:
                    return self._fail(conn, "no device selected (host:transport first)")
                if req.startswith("shell,v2:"):
                    rc, out, err = self._run(req[len("shell,v2:"):])
                    conn.sendall(b"OKAY")
                    for ident, data in ((1, out), (2, err)):
                        for i in range(0, len(data), 65536):
                            chunk = data[i:i + 65536]
                            conn.sendall(bytes([ident]) + struct.pack("<I", len(chunk)) + chunk)
                    conn.sendall(b"\x03" + struct.pack("<I", 1) + bytes([rc & 0xFF]))
                    return None
                if req.startswith("shell:"):
                    rc, out, err = self._run(req[len("shell:"):])
                    conn.sendall(b"OKAY" + out + err)
                    return None
                if req == "sync:":
                    conn.sendall(b"OKAY")
                    return self._sync(conn)
                return self._fail(conn, f"unknown request {req!r}")
        except (OSError, ValueError, struct.error):
            return None
        finally:
            conn.close()

    def _unusable(self, serial: str) -> str | None:
        state = self.devices.get(serial)
        if state is None:
            return f"device '{serial}' not found"
        if state == "unauthorized":
            return ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                    "Try 'adb kill-server' if that seems wrong.")
        if state == "offline":
            return "device offline"
        return None

    @staticmethod
    def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _request(self, conn: socket.socket) -> str | None:
        head = self._recv_exact(conn, 4)
        if head is None:
            return None
        body = self._recv_exact(conn, int(head, 16))
        return None if body is None else body.decode()

    @staticmethod
    def _block(text: str) -> bytes:
        data = text.encode()
        return f"{len(data):04x}".encode() + data

    def _okay(self, conn: socket.socket, payload: bytes = b"") -> None:
        conn.sendall(b"OKAY" + payload)

    def _fail(self, conn: socket.socket, message: str) -> None:
        conn.sendall(b"FAIL" + self._block(message))

    # ---- device side
    def _local(self, remote: str) -> Path:
        return self.root / remote.lstrip("/")

    def _run(self, command: str) -> tuple[int, bytes, bytes]:
        root = str(self.root)
        cmd = command.replace("/data/", f"{root}/data/")
        env = {"PATH": f"{root}/system/bin:/usr/bin:/bin", "HOME": root, **self.env,
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            p = subprocess.run(["/bin/sh", "-c", cmd], cwd=root, env=env, capture_output=True, timeout=120)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired:
            rc, out, err = 124, b"", b"timeout\n"
        if rc < 0:
            rc = 128 - rc  # a signal, as a device shell reports it
        return rc, out.replace(root.encode(), b""), err.replace(root.encode(), b"")

    def _sync(self, conn: socket.socket) -> None:
        for _ in range(64):
            head = self._recv_exact(conn, 8)
            if head is None:
                return
            ident, n = head[:4], struct.unpack("<I", head[4:])[0]
            if ident == b"QUIT":
                return
            arg = (self._recv_exact(conn, n) or b"").decode()
            if ident == b"SEND":
                remote, _, mode = arg.rpartition(",")
                data = bytearray()
                while True:
                    h = self._recv_exact(conn, 8)
                    if h is None:
                        return
                    kind, size = h[:4], struct.unpack("<I", h[4:])[0]
                    if kind == b"DATA":
                        data += self._recv_exact(conn, size) or b""
                    elif kind == b"DONE":
                        break
                    else:
                        return self._sync_fail(conn, f"unexpected {kind!r}")
                path = self._local(remote)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(bytes(data))
                path.chmod(int(mode) & 0o777 if mode else 0o644)
                conn.sendall(b"OKAY" + struct.pack("<I", 0))
            elif ident == b"RECV":
                path = self._local(arg)
                if not path.is_file():
                    return self._sync_fail(conn, f"remote object '{arg}' does not exist")
                data = path.read_bytes()
                for i in range(0, len(data), 65536):
                    chunk = data[i:i + 65536]
                    conn.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                conn.sendall(b"DONE" + struct.pack("<I", 0))
            elif ident == b"STAT":
                path = self._local(arg)
                if path.exists():
                    st = path.stat()
                    mode = (stat.S_IFREG if path.is_file() else stat.S_IFDIR) | (st.st_mode & 0o777)
                    conn.sendall(b"STAT" + struct.pack("<III", mode, st.st_size, int(st.st_mtime)))
                else:
                    conn.sendall(b"STAT" + struct.pack("<III", 0, 0, 0))
            elif ident == b"LIST":
                conn.sendall(b"DONE" + b"\0" * 16)
            else:
                return self._sync_fail(conn, f"unknown sync request {ident!r}")

    def _sync_fail(self, conn: socket.socket, message: str) -> None:
        data = message.encode()
        conn.sendall(b"FAIL" + struct.pack("<I", len(data)) + data)
