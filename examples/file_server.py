"""A small static file server written against anyio only, on trio or asyncio.

It streams files to clients with trio_aio's anyio byte streams: the disk reads
go to io_uring (or the thread backend's fast path) instead of one worker
thread per read, and a client that goes away cancels the read in the kernel.

Run with no arguments, it serves a directory it fills with a few files,
fetches them over TCP as a client would (also storing each download with a
``FileWriteStream``), checks every byte, and exits::

    python examples/file_server.py                  # on trio
    python examples/file_server.py --loop asyncio   # the same code on asyncio
    ANYIO_BACKEND=asyncio python examples/file_server.py

To serve a directory until interrupted (try ``curl``)::

    python examples/file_server.py --serve DIR --port 8000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

import trio_aio
from trio_aio.streams import FileReadStream, FileWriteStream

CHUNK = 1 << 16


async def handle(client: SocketStream, root: Path) -> None:
    """Answer one ``GET /name HTTP/1.x`` request with the file's bytes."""
    async with client:
        buffered = BufferedByteReceiveStream(client)
        try:
            head = await buffered.receive_until(b"\r\n\r\n", 8192)
        except (anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.BrokenResourceError):
            return
        parts = head.split(b"\r\n", 1)[0].split()
        path = (root / os.fsdecode(parts[1]).lstrip("/")).resolve() if len(parts) == 3 else root
        if parts[:1] != [b"GET"] or root not in path.parents or not path.is_file():
            await client.send(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        file = await trio_aio.open_file(path, "rb")
        async with FileReadStream(file) as stream:
            size = (await file.stat()).st_size
            await client.send(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            try:
                async for chunk in stream:  # a disconnect ends the loop (and any read)
                    await client.send(chunk)
            except anyio.BrokenResourceError:
                pass  # the client went away


async def fetch(port: int, name: str, destination: Path) -> int:
    """Download ``name`` into ``destination``; returns its size."""
    async with await anyio.connect_tcp("127.0.0.1", port) as sock:
        await sock.send(f"GET /{name} HTTP/1.0\r\n\r\n".encode())
        buffered = BufferedByteReceiveStream(sock)
        head = await buffered.receive_until(b"\r\n\r\n", 8192)
        if not head.startswith(b"HTTP/1.0 200"):
            raise RuntimeError(f"{name}: {head.decode(errors='replace')}")
        size = int(head.rsplit(b"Content-Length: ", 1)[1])
        async with await FileWriteStream.from_path(destination) as out:
            left = size
            while left:
                chunk = await buffered.receive(min(left, CHUNK))
                await out.send(chunk)
                left -= len(chunk)
    return size


def sha256(path: Path) -> str:
    """The file's SHA-256, read the ordinary way (the check does not trust trio_aio)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def self_test(loop_name: str) -> None:
    """Serve a temporary directory, fetch every file in it, and check the bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "www").resolve()
        root.mkdir()
        files = {"small.txt": b"hello from trio_aio\n", "empty.bin": b""}
        files["big.bin"] = os.urandom(8 << 20)
        for name, data in files.items():
            (root / name).write_bytes(data)
        downloads = Path(tmp, "downloads")
        downloads.mkdir()

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        print(f"loop: {loop_name}, backend: {trio_aio.current_backend()}, port {port}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, lambda client: handle(client, root))
            start = time.perf_counter()
            total = 0
            for name in files:
                total += await fetch(port, name, downloads / name)
                same = sha256(downloads / name) == sha256(root / name)
                print(f"  {name:10} {len(files[name]):>9,} bytes, sha256 matches: {same}")
                if not same:
                    raise SystemExit(f"{name}: the download differs")
            elapsed = time.perf_counter() - start
            print(f"served {total / (1 << 20):.1f} MiB in {elapsed:.2f} s")
            try:
                await fetch(port, "../etc/passwd", downloads / "x")
            except RuntimeError as exc:
                print(f"  outside the root: {str(exc).splitlines()[0]}")
            tg.cancel_scope.cancel()
        await listener.aclose()


async def serve(root: Path, port: int) -> None:
    """Serve ``root`` until interrupted."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    print(f"serving {root} on http://127.0.0.1:{port}/ (backend: {trio_aio.current_backend()})")
    await listener.serve(lambda client: handle(client, root))


def main() -> None:
    """Parse the arguments and run on the chosen loop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--loop",
        choices=("trio", "asyncio"),
        default=os.environ.get("ANYIO_BACKEND", "trio"),
        help="the event loop anyio runs on (default: $ANYIO_BACKEND or trio)",
    )
    parser.add_argument("--serve", metavar="DIR", help="serve DIR until interrupted")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.serve:
        anyio.run(serve, Path(args.serve).resolve(), args.port, backend=args.loop)
    else:
        anyio.run(self_test, args.loop, backend=args.loop)


if __name__ == "__main__":
    main()
