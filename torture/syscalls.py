"""System-call traces of the codec's writes, and every on-disk state a power cut could leave after them.

In the manner of ALICE (Pillai et al., "All File Systems Are Not Created Equal", OSDI 2014): a child process runs
under `strace -f -y -xx` and brackets each operation with two marker system calls (`mark`); `parse` cuts the trace
into those windows, and `Replay` turns each window's calls into logical operations on inodes (creat, mkdir, rename,
unlink, write, trunc, sync), following descriptors through renames, dups and threads. `crash_states` then builds the
folder a power cut at each point could leave, under this persistence model (a generic POSIX one, not ext4's):

1. A crash happens between two system calls: the calls before it were issued, none after.
2. `fsync`/`fdatasync` of a file makes every earlier write and truncation of that file durable (its data and size).
   Nothing else does: not an fsync of another file, not closing it, not a later fsync of the folder.
3. `fsync` of a folder makes every earlier entry operation in it durable (creat, mkdir, rename, unlink). An fsync of
   a file says nothing of its name: a new file, or a new folder, may vanish until its parent folder is flushed.
4. What is not durable may be lost, independently per file and per folder (no order between files, between a file's
   data and its name, or between folders):
   - a folder keeps any subset of its pending entry operations, applied in their order (a rename is atomic: both
     names move together; a renamed file whose creation was lost keeps the data of its inode);
   - a file keeps a prefix of its pending writes and truncations, the last write possibly cut short. Cuts are tried
     at every byte of writes up to `Cuts.every_byte` bytes; in longer ones at each 512-byte sector boundary of the
     file, at each line break (and the bytes either side: where the plain format's turn rules bite) and at
     `Cuts.random` seeded offsets.
5. A file whose only name is a temporary one (`.<name>.tmp`) is never read by the library (the next save replaces
   it): its content is taken whole or empty rather than at every cut.
6. An inode that no name reaches after the crash is gone (an orphan).

Not in the model: a file system that loses or reorders data *after* an fsync returned (a disk that lies about its
cache), and garbage in a file's un-flushed tail. The latter (the size of an append persisted but not its data: zeros,
as ext4 data=writeback or old XFS could leave) is the *weak* tier: `crash_states(..., weak=True)` also yields, for
each cut write, the state where the rest of it reads as zeros, flagged `weak`, so a suite can report it apart.

When one crash point has more states than `Cuts.cap`, a seeded uniform sample of `cap` of them is built (the rest
is counted in `Enumeration.sampled_out`); identical folders are yielded once, with the latest crash point that can
leave them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

STRACE = "/usr/bin/strace"
TRACED = [
    "open",
    "openat",
    "creat",
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "pwritev2",
    "ftruncate",
    "truncate",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "close",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "fallocate",
    "copy_file_range",
    "sendfile",
    "splice",
]
MARK = "/nonexistent/torture-mark"
TEMPORARY = re.compile(r"^\..*\.tmp$")


def mark(kind: str, ident: str) -> None:
    """A system call that stands out in the trace: `kind` (begin or end) of the window `ident`."""
    with contextlib.suppress(OSError):
        os.open(f"{MARK}/{kind}/{ident}", os.O_RDONLY)


def strace_command(output: Path, argv: list[str]) -> list[str]:
    return [
        STRACE,
        "-f",
        "--seccomp-bpf",
        "-qq",
        "-y",
        "-xx",
        "-s",
        str(1 << 28),
        "-o",
        str(output),
        "-e",
        "trace=" + ",".join(TRACED),
        *argv,
    ]


def run_traced(output: Path, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(strace_command(output, argv), env=env, capture_output=True, text=True, timeout=timeout)


# ================================================================================================ parsing


class TraceError(Exception):
    """The trace holds something the model cannot account for (a truncated buffer, an unmodelled call)."""


@dataclass
class Call:
    pid: str
    name: str
    args: list[str]
    ret: int
    line: str


_LINE = re.compile(r"^(\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_HEX = re.compile(r"(?:\\x[0-9a-f]{2})+")


def _calls(text: str) -> Iterator[Call]:
    pending: dict[str, str] = {}
    for raw in text.splitlines():
        m = _LINE.match(raw)
        pid, rest = (m.group(1), m.group(2)) if m else ("0", raw)
        if rest.startswith(("+++", "---")):
            continue
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = _RESUMED.match(rest)
        if resumed:
            if pid not in pending:
                continue
            rest = pending.pop(pid) + resumed.group(2)
        cut = rest.rfind(") = ")
        open_paren = rest.find("(")
        if cut < 0 or open_paren < 0:
            continue  # "= ?" (a call cut by the exit) and other notes: never a completed change
        ret_text = rest[cut + 4 :]
        number = re.match(r"^-?\d+|^0x[0-9a-f]+", ret_text)
        if not number:
            continue
        ret = int(number.group(0), 0)
        yield Call(pid, rest[:open_paren], _split(rest[open_paren + 1 : cut]), ret, raw)


def _split(args: str) -> list[str]:
    """Top-level arguments (strings are all \\x escapes, so only brackets need tracking)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(args):
        if ch in "[{(<":
            depth += 1
        elif ch in "]})>":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(args[start:i].strip())
            start = i + 1
    tail = args[start:].strip()
    if tail:
        out.append(tail)
    return out


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


def string(token: str, call: Call) -> bytes:
    m = re.fullmatch(r'"((?:\\x[0-9a-f]{2})*)"', token)
    if not m:
        raise TraceError(f"a buffer cut short or not a string ({token[-20:]!r}) in: {call.line[:200]}")
    return unhex(m.group(1))


_FD = re.compile(r"^(-?\d+|AT_FDCWD)(?:<((?:\\x[0-9a-f]{2})*)>)?(\(deleted\))?$")


def fd_of(token: str) -> tuple[int, str | None]:
    """A descriptor argument and, with -y, the path it named at the time of the call."""
    m = _FD.match(token)
    if not m:
        return -1, None
    number = -100 if m.group(1) == "AT_FDCWD" else int(m.group(1))
    path = None if m.group(2) is None else unhex(m.group(2)).decode("utf-8", "surrogateescape")
    return number, path


def parse(text: str) -> dict[str, list[Call]]:
    """The calls of each window between `mark("begin", id)` and `mark("end", id)`, in completion order."""
    windows: dict[str, list[Call]] = {}
    current: list[Call] | None = None
    prefix = MARK + "/"
    for call in _calls(text):
        if call.name in ("open", "openat") and call.ret < 0:
            path_token = call.args[1] if call.name == "openat" else call.args[0]
            try:
                path = string(path_token, call).decode("utf-8", "surrogateescape")
            except TraceError:
                path = ""
            if path.startswith(prefix):
                kind, ident = path[len(prefix) :].split("/", 1)
                current = windows.setdefault(ident, []) if kind == "begin" else None
                continue
        if current is not None:
            current.append(call)
    return windows


# ================================================================================================ the file tree


@dataclass
class Tree:
    """Folders and files by inode: the root folder is inode 1."""

    kinds: dict[int, str] = field(default_factory=lambda: {1: "d"})
    entries: dict[int, dict[str, int]] = field(default_factory=lambda: {1: {}})
    data: dict[int, bytes] = field(default_factory=dict)
    next_ino: int = 2

    @classmethod
    def load(cls, folder: Path) -> tuple[Tree, dict[str, int]]:
        """The tree of a real folder, and each relative path's inode."""
        tree = cls()
        inodes = {"": 1}
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            parent = inodes[os.path.dirname(rel)]
            ino = tree.new("d" if path.is_dir() else "f")
            tree.entries[parent][path.name] = ino
            if path.is_file():
                tree.data[ino] = path.read_bytes()
            inodes[rel] = ino
        return tree, inodes

    def new(self, kind: str) -> int:
        ino = self.next_ino
        self.next_ino += 1
        self.kinds[ino] = kind
        if kind == "d":
            self.entries[ino] = {}
        else:
            self.data[ino] = b""
        return ino

    def copy(self) -> Tree:
        return Tree(dict(self.kinds), {d: dict(e) for d, e in self.entries.items()}, dict(self.data), self.next_ino)

    def files(self) -> tuple[dict[str, int], set[str]]:
        """What the tree's names reach: each file's relative path and inode, and the folders' paths."""
        files: dict[str, int] = {}
        dirs: set[str] = set()
        stack = [("", 1)]
        while stack:
            prefix, d = stack.pop()
            for name, ino in self.entries.get(d, {}).items():
                rel = f"{prefix}{name}"
                if self.kinds.get(ino) == "d":
                    dirs.add(rel)
                    stack.append((rel + "/", ino))
                else:
                    files[rel] = ino
        return files, dirs

    def flat(self) -> dict[str, bytes | None]:
        """Relative path -> content (None for a folder)."""
        files, dirs = self.files()
        out: dict[str, bytes | None] = {rel: self.data[ino] for rel, ino in files.items()}
        out.update({rel: None for rel in dirs})
        return out


def flat_folder(folder: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))
    }


# ================================================================================================ replay


@dataclass(frozen=True)
class Op:
    """One logical change. `ino` is the inode whose flush makes it durable: the folder for entry operations
    (creat, mkdir, rename, unlink), the file for data operations (write, trunc); sync flushes `ino`."""

    kind: str
    ino: int
    name: str = ""
    to: str = ""
    target: int = 0
    offset: int = 0
    data: bytes = b""
    size: int = 0
    call: str = ""

    def _replace_ino(self, ino: int) -> Op:
        return Op(self.kind, ino, self.name, self.to, self.target, self.offset, self.data, self.size, self.call)

    def describe(self) -> str:
        if self.kind in ("write",):
            return f"write(ino {self.ino}, {len(self.data)} bytes at {self.offset})"
        if self.kind == "trunc":
            return f"trunc(ino {self.ino}, {self.size})"
        if self.kind == "sync":
            return f"fsync(ino {self.ino})"
        if self.kind == "rename":
            return f"rename({self.name} -> {self.to} in dir {self.ino})"
        return f"{self.kind}({self.name} in dir {self.ino})"


def apply(tree: Tree, op: Op) -> None:
    if op.kind == "sync":
        return
    if op.kind in ("creat", "mkdir"):
        if op.target not in tree.kinds:
            tree.kinds[op.target] = "d" if op.kind == "mkdir" else "f"
            if op.kind == "mkdir":
                tree.entries[op.target] = {}
            else:
                tree.data[op.target] = b""
        tree.entries[op.ino][op.name] = op.target
    elif op.kind == "rename":
        tree.entries[op.ino].pop(op.name, None)
        tree.entries[op.ino][op.to] = op.target
    elif op.kind == "unlink":
        tree.entries[op.ino].pop(op.name, None)
    elif op.kind == "write":
        old = tree.data.get(op.ino, b"")
        if op.offset > len(old):
            old += b"\0" * (op.offset - len(old))
        tree.data[op.ino] = old[: op.offset] + op.data + old[op.offset + len(op.data) :]
    elif op.kind == "trunc":
        old = tree.data.get(op.ino, b"")
        tree.data[op.ino] = old[: op.size] + b"\0" * max(0, op.size - len(old))
    else:
        raise AssertionError(op.kind)


@dataclass
class _Open:
    ino: int | None  # None: outside the folder under study
    append: bool
    position: list[int]  # shared by dups, as the kernel's open file description is


class Replay:
    """Turns a window's calls into logical operations on the folder `root` (an absolute path), starting from
    `tree` (its state at the window's start). Calls on other paths are ignored."""

    def __init__(self, root: str, tree: Tree) -> None:
        self.root = root.rstrip("/")
        self.live = tree.copy()
        self.fds: dict[int, _Open] = {}
        self.ops: list[Op] = []
        self.resolved_by_path = 0

    def _lookup(self, path: str) -> tuple[int, str] | None:
        """The folder inode and entry name of `path` inside the root, or None when outside it."""
        if path == self.root or not path.startswith(self.root + "/"):
            return None
        parts = path[len(self.root) + 1 :].split("/")
        d = 1
        for part in parts[:-1]:
            nxt = self.live.entries.get(d, {}).get(part)
            if nxt is None or self.live.kinds.get(nxt) != "d":
                raise TraceError(f"{path}: a folder on the way is not in the model")
            d = nxt
        return d, parts[-1]

    def _resolve(self, path: str) -> int | None:
        if path == self.root:
            return 1
        where = self._lookup(path)
        if where is None:
            return None
        return self.live.entries[where[0]].get(where[1])

    def _path_arg(self, call: Call, dirfd_index: int | None, path_index: int) -> str:
        path = string(call.args[path_index], call).decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            base = None
            if dirfd_index is not None:
                _, base = fd_of(call.args[dirfd_index])
            if base is None:
                raise TraceError(f"a relative path without a known base: {call.line[:200]}")
            path = os.path.normpath(os.path.join(base, path))
        return path

    def _emit(self, op: Op) -> None:
        apply(self.live, op)
        self.ops.append(op)

    def _fd(self, token: str, call: Call) -> _Open | None:
        number, path = fd_of(token)
        found = self.fds.get(number)
        if found is not None:
            return found
        if path is None or not (path == self.root or path.startswith(self.root + "/")):
            return None
        ino = self._resolve(path.removesuffix("(deleted)"))
        if ino is None:
            raise TraceError(f"a descriptor of the folder opened before the window: {call.line[:200]}")
        self.resolved_by_path += 1
        return _Open(ino, False, [0])

    def feed(self, call: Call) -> None:
        name, a = call.name, call.args
        if call.ret < 0 and name not in ("close",):
            return  # a failed call changes nothing
        if name in ("open", "openat", "creat"):
            path = self._path_arg(call, 0 if name == "openat" else None, 1 if name == "openat" else 0)
            flags = "O_CREAT|O_WRONLY|O_TRUNC" if name == "creat" else a[2 if name == "openat" else 1]
            self._open(call, path, flags)
        elif name in ("write", "pwrite64", "writev", "pwritev", "pwritev2"):
            self._write(call)
        elif name in ("ftruncate", "truncate"):
            size = int(a[1], 0)
            if name == "truncate":
                ino = self._resolve(self._path_arg(call, None, 0))
            else:
                opened = self._fd(a[0], call)
                ino = None if opened is None else opened.ino
            if ino is not None:
                self._emit(Op("trunc", ino, size=size, call=call.line))
        elif name in ("fsync", "fdatasync"):
            opened = self._fd(a[0], call)
            if opened is not None and opened.ino is not None:
                self._emit(Op("sync", opened.ino, call=call.line))
        elif name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                src, dst = self._path_arg(call, None, 0), self._path_arg(call, None, 1)
            else:
                src, dst = self._path_arg(call, 0, 1), self._path_arg(call, 2, 3)
            self._rename(call, src, dst)
        elif name in ("unlink", "unlinkat", "rmdir"):
            path = self._path_arg(call, 0, 1) if name == "unlinkat" else self._path_arg(call, None, 0)
            where = self._lookup(path)
            if where is not None:
                self._emit(Op("unlink", where[0], name=where[1], call=call.line))
        elif name in ("mkdir", "mkdirat"):
            path = self._path_arg(call, 0, 1) if name == "mkdirat" else self._path_arg(call, None, 0)
            where = self._lookup(path)
            if where is not None:
                self._emit(Op("mkdir", where[0], name=where[1], target=self.live.next_ino, call=call.line))
                self.live.next_ino += 1
        elif name == "close":
            self.fds.pop(fd_of(a[0])[0], None)
        elif name in ("fcntl", "dup", "dup2", "dup3"):
            if name == "fcntl" and not a[1].startswith("F_DUPFD"):
                return
            opened = self._fd(a[0], call)
            if opened is not None:
                self.fds[call.ret] = opened
            else:
                self.fds.pop(call.ret, None)
        elif name in ("sync", "syncfs"):
            raise TraceError(f"sync/syncfs is not modelled: {call.line[:200]}")
        else:
            # link, symlink, fallocate, copy_file_range, sendfile, splice: not used by the library; if they touch
            # the folder the model would be wrong, so say so.
            if any(self.root in (fd_of(t)[1] or "") for t in a) or self.root.encode() in call.line.encode():
                raise TraceError(f"an unmodelled call on the folder: {call.line[:200]}")

    def _open(self, call: Call, path: str, flags: str) -> None:
        fd = call.ret
        self.fds.pop(fd, None)
        if path == self.root:
            self.fds[fd] = _Open(1, False, [0])
            return
        where = self._lookup(path)
        if where is None:
            self.fds[fd] = _Open(None, False, [0])
            return
        d, entry = where
        ino = self.live.entries[d].get(entry)
        if ino is None:
            if "O_CREAT" not in flags:
                raise TraceError(f"opened a file the model lacks: {call.line[:200]}")
            ino = self.live.next_ino
            self.live.next_ino += 1
            self._emit(Op("creat", d, name=entry, target=ino, call=call.line))
        elif "O_TRUNC" in flags and self.live.kinds[ino] == "f" and self.live.data[ino]:
            self._emit(Op("trunc", ino, size=0, call=call.line))
        self.fds[fd] = _Open(ino, "O_APPEND" in flags, [0])

    def _write(self, call: Call) -> None:
        name, a = call.name, call.args
        opened = self._fd(a[0], call)
        if opened is None or opened.ino is None:
            return
        if name in ("write", "pwrite64"):
            data = string(a[1], call)
            if len(data) != int(a[2]):
                raise TraceError(f"buffer of {len(data)} bytes for a count of {a[2]}: {call.line[:200]}")
        else:
            data = b""
            for m in re.finditer(r'iov_base=("(?:\\x[0-9a-f]{2})*"(?:\.\.\.)?), iov_len=(\d+)', a[1]):
                piece = string(m.group(1), call)
                if len(piece) != int(m.group(2)):
                    raise TraceError(f"an iovec cut short: {call.line[:200]}")
                data += piece
        data = data[: call.ret]
        if name in ("pwrite64", "pwritev", "pwritev2"):
            offset = int(a[3], 0)
        elif opened.append:
            offset = len(self.live.data[opened.ino])
        else:
            offset = opened.position[0]
            opened.position[0] += len(data)
        if data:
            self._emit(Op("write", opened.ino, offset=offset, data=data, call=call.line))

    def _rename(self, call: Call, src: str, dst: str) -> None:
        a, b = self._lookup(src), self._lookup(dst)
        if a is None and b is None:
            return
        if a is None or b is None or a[0] != b[0]:
            raise TraceError(f"a rename across folders is not modelled: {call.line[:200]}")
        ino = self.live.entries[a[0]].get(a[1])
        if ino is None:
            raise TraceError(f"renamed a name the model lacks: {call.line[:200]}")
        self._emit(Op("rename", a[0], name=a[1], to=b[1], target=ino, call=call.line))


# ================================================================================================ crash states


@dataclass
class Cuts:
    """Where a pending write may be cut (see the module docstring, rule 4) and how many states one crash point
    may have before it is sampled."""

    every_byte: int = 4096
    sector: int = 512
    random: int = 16
    breaks: int = 64  # line breaks tried in one long write (a seeded sample when it has more)
    cap: int = 2000


@dataclass
class CrashState:
    files: dict[str, bytes]
    dirs: set[str]
    inodes: dict[str, int]  # relative path -> inode of the model (to map index identities)
    point: int  # the number of operations issued before the crash
    weak: bool
    story: str  # what was kept and what lost, to replay a failure by hand

    def key(self) -> bytes:
        h = hashlib.blake2b(digest_size=20)
        for rel in sorted(self.files):
            h.update(rel.encode() + b"\0" + hashlib.blake2b(self.files[rel], digest_size=20).digest())
        for rel in sorted(self.dirs):
            h.update(b"d" + rel.encode() + b"\0")
        return h.digest()


@dataclass
class Enumeration:
    ops: list[Op]
    sampled_out: int = 0
    generated: int = 0


class Choice(NamedTuple):
    """What of a file's pending operations persists: the first `whole` of them, then `cut` bytes of the next
    write (`weak`: and zeros for the rest of it)."""

    whole: int
    cut: int = 0
    weak: bool = False
    temporary: bool = False

    def story(self, pending: int) -> str:
        if self.temporary:
            return f"temporary: {'all' if self.whole else 'none'} of {pending} pending ops"
        if self.whole == pending:
            return f"all {pending} pending ops"
        rest = ", rest zeros" if self.weak else ""
        return f"{self.whole} of {pending} pending ops, then {self.cut} bytes of the next{rest}"


def _cuts_of(op: Op, cuts: Cuts, rng: random.Random) -> list[int]:
    """Where the write `op` may be cut: how many of its bytes persist (0 to all but one)."""
    n = len(op.data)
    if n <= cuts.every_byte:
        return list(range(n))
    found = {0}
    found.update(range((-op.offset) % cuts.sector, n, cuts.sector))
    breaks = [i + 1 for i, b in enumerate(op.data) if b == 0x0A]
    if len(breaks) > cuts.breaks:
        breaks = rng.sample(breaks, cuts.breaks)
    for b in breaks:
        found.update((b - 1, b, b + 1))
    found.update(rng.randrange(n) for _ in range(cuts.random))
    return sorted(c for c in found if 0 <= c < n)


def _file_choices(pending: list[Op], temporary: bool, cuts: Cuts, rng: random.Random, weak: bool) -> list[Choice]:
    """What a file with `pending` data operations may keep (rule 4; rule 5 for a temporary file)."""
    if temporary:
        return [Choice(0, temporary=True), Choice(len(pending), temporary=True)]
    out = []
    for i, op in enumerate(pending):
        if op.kind != "write":
            out.append(Choice(i))
            continue
        for c in _cuts_of(op, cuts, rng):
            out.append(Choice(i, c))
            # Zeros after the cut: at sector boundaries (where a disk leaves them) and a tenth of the other cuts.
            if weak and (c == 0 or (op.offset + c) % cuts.sector == 0 or rng.random() < 0.1):
                out.append(Choice(i, c, weak=True))
    out.append(Choice(len(pending)))
    return out


def _content(base: bytes, pending: list[Op], choice: Choice) -> bytes:
    tree = Tree()
    ino = tree.new("f")
    tree.data[ino] = base
    for op in pending[: choice.whole]:
        apply(tree, op._replace_ino(ino))
    if choice.whole < len(pending) and not choice.temporary:
        op = pending[choice.whole]
        data = op.data[: choice.cut]
        if choice.weak:
            old = tree.data[ino]
            end = op.offset + len(op.data)
            kept = old[op.offset + choice.cut : end] if len(old) > op.offset + choice.cut else b""
            data += kept + b"\0" * (len(op.data) - choice.cut - len(kept))
        if data:
            apply(tree, Op("write", ino, offset=op.offset, data=data))
    return tree.data[ino]


def crash_states(
    before: Tree, ops: list[Op], cuts: Cuts, rng: random.Random, *, weak: bool = False
) -> tuple[Enumeration, Iterator[CrashState]]:
    """Every folder a power cut during `ops` (starting from `before`, durable) may leave, one per distinct folder,
    with the latest crash point that leaves it."""
    enumeration = Enumeration(ops)

    def generate() -> Iterator[CrashState]:
        seen: set[bytes] = set()
        # Later crash points first, so that a folder several points can leave is reported at the latest.
        for point in range(len(ops), -1, -1):
            for state in _states_at(before, ops, point, cuts, rng, weak, enumeration):
                key = state.key()
                if key in seen:
                    continue
                seen.add(key)
                enumeration.generated += 1
                yield state

    return enumeration, generate()


def _states_at(
    before: Tree, ops: list[Op], point: int, cuts: Cuts, rng: random.Random, weak: bool, enumeration: Enumeration
) -> Iterator[CrashState]:
    issued = ops[:point]
    last_sync: dict[int, int] = {}
    for i, op in enumerate(issued):
        if op.kind == "sync":
            last_sync[op.ino] = i
    base = before.copy()
    pending_dirs: dict[int, list[Op]] = {}
    pending_files: dict[int, list[Op]] = {}
    for i, op in enumerate(issued):
        if op.kind == "sync":
            continue
        if i < last_sync.get(op.ino, -1):
            apply(base, op)
        elif op.kind in ("write", "trunc"):
            pending_files.setdefault(op.ino, []).append(op)
        else:
            pending_dirs.setdefault(op.ino, []).append(op)
            if op.kind in ("creat", "mkdir") and op.target not in base.kinds:
                # The inode exists (its data may be durable) even while its name is not.
                base.kinds[op.target] = "d" if op.kind == "mkdir" else "f"
                if op.kind == "mkdir":
                    base.entries[op.target] = {}
                else:
                    base.data[op.target] = b""
    if any(len(p) > 12 for p in pending_dirs.values()):
        raise TraceError("more than 12 pending entry operations in one folder: too many subsets to build")
    dir_ids = sorted(pending_dirs)
    combos = []
    for chosen in itertools.product(*[list(_subsets(pending_dirs[d])) for d in dir_ids]):
        tree = base.copy()
        story = []
        for d, subset in zip(dir_ids, chosen):
            for op in subset:
                apply(tree, op)
            story.append(f"dir {d} keeps {[o.describe() for o in subset]} of {len(pending_dirs[d])} pending")
        files, dirs = tree.files()
        names_of: dict[int, list[str]] = {}
        for rel, ino in files.items():
            names_of.setdefault(ino, []).append(rel)
        reached = sorted(ino for ino in names_of if ino in pending_files)
        choices = []
        for ino in reached:
            temporary = all(TEMPORARY.match(os.path.basename(n)) for n in names_of[ino])
            choices.append(_file_choices(pending_files[ino], temporary, cuts, rng, weak))
        count = 1
        for c in choices:
            count *= len(c)
        combos.append((tree, files, dirs, reached, choices, "; ".join(story), count))
    total = sum(combo[-1] for combo in combos)
    picks: Iterator[tuple[int, tuple[Choice, ...]]]
    if total > cuts.cap:
        # Too many: a seeded uniform sample of `cap` of them (duplicates are dropped by the caller).
        enumeration.sampled_out += total - cuts.cap
        weights = [combo[-1] for combo in combos]
        chosen_combos = rng.choices(range(len(combos)), weights=weights, k=cuts.cap)
        picks = iter([(i, tuple(rng.choice(c) for c in combos[i][4])) for i in chosen_combos])
    else:
        picks = ((i, pick) for i, combo in enumerate(combos) for pick in itertools.product(*combo[4]))
    for i, pick in picks:
        tree, files, dirs, reached, _, dir_story, _ = combos[i]
        if sum(1 for p in pick if p.weak) > 1:
            continue  # one weak file at a time: each weak state is then explained by one write
        contents = {ino: _content(tree.data[ino], pending_files[ino], p) for ino, p in zip(reached, pick)}
        told = [f"ino {ino}: {p.story(len(pending_files[ino]))}" for ino, p in zip(reached, pick)]
        yield CrashState(
            files={rel: contents.get(ino, tree.data[ino]) for rel, ino in files.items()},
            dirs=dirs,
            inodes=dict(files),
            point=point,
            weak=any(p.weak for p in pick),
            story=f"crash after {point} of {len(ops)} ops; " + "; ".join([dir_story, *told]),
        )


def _subsets(pending: list[Op]) -> Iterator[list[Op]]:
    for mask in range(1 << len(pending)):
        yield [op for i, op in enumerate(pending) if mask >> i & 1]


# ================================================================================================ materializing

INDEX_MAGIC = b"CCIDX\x00\x01\x00"


def materialize(state: CrashState, folder: Path, identities: dict[tuple[int, int], int]) -> None:
    """Writes the crash state into the empty `folder`. An index names its data file by (device, inode), which a
    copy cannot keep: an index whose identity was a file of the trace (`identities`: real identity -> model inode)
    is made to name that file's copy, or, when no name reaches that file now, a file that does not exist."""
    for rel in sorted(state.dirs):
        (folder / rel).mkdir(parents=True, exist_ok=True)
    for rel, content in state.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    for rel, content in state.files.items():
        if not rel.endswith(".idx") or len(content) < 28 or not content.startswith(INDEX_MAGIC):
            continue
        if struct.unpack_from("<I", content, 24)[0] != zlib.crc32(content[:24]):
            continue  # a damaged header stays damaged
        ino, dev = struct.unpack_from("<QQ", content, 8)
        model = identities.get((dev, ino))
        if model is None:
            continue
        where = next((r for r, i in state.inodes.items() if i == model), None)
        if where is None:
            new_ino, new_dev = (1 << 62) + model, dev
        else:
            st = os.stat(folder / where)
            new_ino, new_dev = st.st_ino, st.st_dev
        header = content[:8] + struct.pack("<QQ", new_ino, new_dev)
        header += struct.pack("<I", zlib.crc32(header))
        (folder / rel).write_bytes(header + content[28:])


def copy_folder(src: Path, dst: Path) -> dict[str, tuple[int, int]]:
    """Copies `src` to `dst` and returns the (device, inode) of each file of `src` by relative path."""
    shutil.copytree(src, dst, symlinks=True)
    out = {}
    for p in src.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(src).as_posix()] = (st.st_dev, st.st_ino)
    return out
