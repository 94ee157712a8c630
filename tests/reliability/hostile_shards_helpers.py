"""Hostile shards made the way an attacker would: raw tars (not through our writer), gzip bombs written
without ever holding the inflated bytes, a PNG that claims 170 megapixels in a few hundred KB."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

from reliability_helpers import child_env

CHUNK = 1 << 20


def raw_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    """A tar of exactly these member names and bytes (``mode`` ``w:gz`` for a gzip-compressed one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode, format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(sample: dict) -> list[tuple[str, bytes]]:
    """``{"__key__": k, ext: value}`` -> ``[(k.ext, bytes)]`` (dicts as JSON, str as UTF-8)."""
    import json

    out = []
    for ext, v in sample.items():
        if ext == "__key__":
            continue
        data = v if isinstance(v, bytes) else (json.dumps(v) if isinstance(v, (dict, list)) else v).encode()
        out.append((f"{sample['__key__']}.{ext}", data))
    return out


def _repeated_deflate(comp, data: bytes) -> bytes:
    """``data`` deflated and full-flushed: after a full flush the same input deflates to the same bytes."""
    return comp.compress(data) + comp.flush(zlib.Z_FULL_FLUSH)


def gzip_bomb(path: Path, members: list[tuple[str, int | bytes]]) -> int:
    """A gzip-compressed tar named as the caller likes; a member given as an int is that many zero
    bytes (a multiple of 1 MiB), written as one deflated MiB repeated, so the bomb is made in well
    under a second and never inflated here. Returns the inflated size."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc, total = 0, 0
    zeros = bytes(CHUNK)
    block = None
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")

        def put(data: bytes) -> None:
            nonlocal crc, total
            f.write(_repeated_deflate(comp, data))
            crc, total = zlib.crc32(data, crc), total + len(data)

        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = content if isinstance(content, int) else len(content)
            put(info.tobuf(format=tarfile.USTAR_FORMAT))
            if isinstance(content, int):
                assert content % CHUNK == 0
                for _ in range(content // CHUNK):
                    block = block or _repeated_deflate(comp, zeros)
                    f.write(block)
                    crc, total = zlib.crc32(zeros, crc), total + CHUNK
            else:
                put(content + bytes(-len(content) % 512))
        put(bytes(1024))
        f.write(comp.flush())
        f.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))
    return total


def png_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of ``width x height`` black pixels, a few hundred KB even at 170 megapixels:
    the rows deflate (full-flushed) to the same bytes, written once per block of rows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    per_block = max(1, CHUNK // (width + 1))
    rows = bytes(per_block * (width + 1))  # each row: filter byte 0, then zeros
    block = _repeated_deflate(comp, rows)
    parts, adler, done = [], 1, 0
    while done + per_block <= height:
        parts.append(block)
        adler, done = zlib.adler32(rows, adler), done + per_block
    tail = bytes((height - done) * (width + 1))
    parts.append(comp.compress(tail) + comp.flush())
    adler = zlib.adler32(tail, adler)
    idat = b"\x78\xda" + b"".join(parts) + struct.pack(">I", adler & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


_MEASURED = """
import re, sys
from videogen.cli import main
status = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)
print(f"VmHWM {hwm}", file=sys.stderr)
sys.exit(status)
"""


def peak_rss_mib(args: list[str]) -> tuple[int, float, str]:
    """Run ``videogen ARGS`` in a child process; its exit status, peak RSS (MiB) and stdout. The peak is
    the child's own VmHWM (``ru_maxrss`` of a child counts the forking parent's memory on Linux)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURED, *args], capture_output=True, env=child_env(),
                          timeout=300)
    hwm = [line for line in proc.stderr.decode().splitlines() if line.startswith("VmHWM ")]
    assert hwm, proc.stderr.decode()[-2000:]
    return proc.returncode, int(hwm[-1].split()[1]) / 1024, proc.stdout.decode()
