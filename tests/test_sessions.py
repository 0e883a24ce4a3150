"""SessionStore: any str id stored safely inside the root (or refused), listed back as given, never through a link
planted in the store, private whatever the umask, deleted whole even while others write."""

from __future__ import annotations

import errno
import gzip
import inspect
import os
import re
import stat
import tempfile
import threading
import time
import unicodedata
import warnings
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from conversation_codec import ConversationCodec, DecryptionError, SessionStore
from conversation_codec import sessions as sessions_module
from conversation_codec.sessions import MAX_ENCODED_ID, SessionCodec, decode_id, encode_id, shard_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SAFE_NAME = r"[a-z0-9_%-]+\.jsonl"
WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}

HOSTILE_IDS = [
    "user-123",
    ".",
    "..",
    "../..",
    "../escape",
    "/",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..\\..\\windows",
    "C:\\x",
    "\x00",
    "a\x00b",
    "\n",
    " ",
    " trailing ",
    "dot.",
    ".hidden",
    "con",
    "CON",
    "Con",
    "nul",
    "NUL",
    "com1",
    "LPT9",
    "aux.txt",
    "conin$",
    "-rf",
    "--help",
    "a",
    "A",
    "ß",
    "SS",
    "ss",
    "\u212a",  # KELVIN SIGN, which case-folds to k
    "k",
    "K",
    "é",  # NFC
    "e\u0301",  # NFD: another id
    "İ",
    "i\u0307",
    "%41",
    "%2e",
    "%",
    "x.jsonl",
    "x.jsonl.idx",
    "x.jsonl.torn-5",
    ".x.jsonl.tmp",
    "中文会话",
    "🙂",
    "\ud83d\ude42",  # the same smiley's surrogate pair, as two lone surrogates: another id
    "\ud800",
    "\udfff tail",
    "\u202e" + "gnp.exe",  # right-to-left override
    "a" * MAX_ENCODED_ID,
]


def storable(session_id: str) -> bool:
    try:
        encode_id(session_id)
    except ValueError:
        return False
    return True


# Any text, every code point and lone surrogates included, short enough to be stored.
ids = st.text(alphabet=st.characters(exclude_categories=()), min_size=1, max_size=40).filter(storable)


def inside(root: Path, path: Path) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def layout(root: Path) -> list[str]:
    """Every entry under root, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "store", durable=False)


# ---------------------------------------------------------------------------------------------- ids and names


def test_sessions_round_trip_every_hostile_id(store: SessionStore) -> None:
    for n, session_id in enumerate(HOSTILE_IDS):
        store.conversation(session_id).save([{"n": n}])
    assert sorted(store.sessions()) == sorted(HOSTILE_IDS)
    for n, session_id in enumerate(HOSTILE_IDS):
        codec = store.conversation(session_id)
        assert codec.load() == [{"n": n}]  # no two ids share a file
        assert session_id in store
        assert inside(store.root, codec.path)
        assert codec.path.parent.parent == store.root
        assert codec.path.name.islower() or not any(c.isalpha() for c in codec.path.name)
    names = [p.name for p in store.root.glob("*/*")]
    assert len(names) == len(HOSTILE_IDS)
    assert len({name.casefold() for name in names}) == len(names)
    for name in names:
        assert re.fullmatch(SAFE_NAME, name), name
        stem = name.split(".")[0]
        assert stem not in WINDOWS_DEVICES and not stem.startswith("-")
    # Nothing escaped: root holds shard folders only, and nothing was written beside root.
    assert all(len(p.name) == 2 for p in store.root.iterdir())
    assert sorted(p.name for p in store.root.parent.iterdir()) == ["store"]


@given(ids)
@settings(max_examples=500)
def test_encoding_is_reversible_and_safe(session_id: str) -> None:
    stem = encode_id(session_id)
    assert decode_id(stem) == session_id
    assert re.fullmatch(SAFE_NAME, stem + ".jsonl")
    assert len(stem.encode()) <= MAX_ENCODED_ID
    assert stem not in WINDOWS_DEVICES and stem[0] != "-"
    shard = shard_of(stem)
    assert len(shard) == 2 and int(shard, 16) in range(256) and shard == shard.lower()


def reference_decode(stem: str) -> str | None:
    """decode_id the slow, obvious way: any `%xx` spelling, kept only if encode_id gives it back."""
    if not re.fullmatch(r"(?:[a-z0-9_-]|%[0-9a-f]{2})+", stem):
        return None
    try:
        session_id = unquote_to_bytes(stem).decode("utf-8", "surrogatepass")
        return session_id if encode_id(session_id) == stem else None
    except ValueError:  # not UTF-8, or too long
        return None


stems = st.one_of(
    st.lists(
        st.one_of(st.sampled_from(list("acdiklmnoprtuxz019_-%")), st.integers(0, 255).map(lambda b: f"%{b:02x}")),
        min_size=0,
        max_size=70,
    ).map("".join),
    ids.map(encode_id),
    st.sampled_from(sorted(WINDOWS_DEVICES)).flatmap(
        lambda d: st.sampled_from([d, f"%{ord(d[0]):02x}{d[1:]}", d.upper(), "%2d" + d, d + "%2d", "-" + d])
    ),
)


@given(stems)
@settings(max_examples=600)
def test_decoding_accepts_exactly_the_names_encoding_writes(stem: str) -> None:
    assert decode_id(stem) == reference_decode(stem)


@given(st.lists(stems, max_size=12, unique=True))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_listing_accepts_exactly_the_names_encoding_writes(names: list[str]) -> None:
    # sessions() reads a shard's names in one regex pass, not through decode_id: they must agree.
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(tmp)
        for stem in names:
            folder = Path(tmp) / shard_of(stem)
            folder.mkdir(exist_ok=True)
            (folder / (stem + ".jsonl")).write_bytes(b"")
        expected = [decode_id(stem) for stem in names]
        assert sorted(store.sessions()) == sorted(i for i in expected if i is not None)


def test_the_escape_pattern_matches_exactly_the_bytes_kept_escaped() -> None:
    pattern = re.compile(sessions_module._ESCAPE_OF_UNSAFE)
    for b in range(256):
        kept = bytes([b]) in b"abcdefghijklmnopqrstuvwxyz0123456789_-"
        assert bool(pattern.fullmatch(f"%{b:02x}")) is not kept, hex(b)
        assert not pattern.fullmatch(f"%{b:02X}") or f"{b:02x}" == f"{b:02X}"


@given(st.lists(ids, min_size=2, max_size=20, unique=True))
@settings(max_examples=300)
def test_distinct_ids_never_share_a_name_even_case_folded_or_normalised(session_ids: list[str]) -> None:
    names = [encode_id(s) for s in session_ids]
    for fold in (str, str.casefold, str.upper, lambda n: unicodedata.normalize("NFD", n)):
        assert len({fold(n) for n in names}) == len(names)


@given(st.lists(ids, min_size=1, max_size=6, unique=True))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_ids_round_trip_through_the_disk(session_ids: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(Path(tmp) / "s", durable=False)
        for n, session_id in enumerate(session_ids):
            codec = store.conversation(session_id)
            codec.append_turn({"n": n})
            assert inside(store.root, codec.path)
        assert sorted(store.sessions()) == sorted(session_ids)
        for n, session_id in enumerate(session_ids):
            assert store.conversation(session_id).load() == [{"n": n}]
        assert sorted(os.listdir(tmp)) == ["s"]


@pytest.mark.parametrize(
    ("pairs"),
    [("a", "A"), ("ss", "ß"), ("k", "\u212a"), ("é", "e\u0301"), ("%41", "A"), ("con", "%63on"), ("x", "x ")],
)
def test_ids_that_look_alike_are_distinct_files(store: SessionStore, pairs: tuple[str, str]) -> None:
    first, second = pairs
    store.conversation(first).save(["first"])
    store.conversation(second).save(["second"])
    assert store.conversation(first).load() == ["first"]
    assert store.conversation(second).load() == ["second"]
    assert encode_id(first).casefold() != encode_id(second).casefold()


def test_layout_is_stable(store: SessionStore) -> None:
    # The names and shards are the on-disk format (docs/SESSIONS.md): they must not change between versions.
    assert encode_id("user-123") == "user-123"
    assert encode_id("User 1") == "%55ser%201"
    assert encode_id("../x") == "%2e%2e%2fx"
    assert encode_id("con") == "%63on"
    assert encode_id("-x") == "%2dx"
    assert encode_id("é") == "%c3%a9"
    assert shard_of("123456789") == "26"  # CRC-32's check value is 0xCBF43926: its low byte
    assert shard_of("user-123") == "4e"
    store.conversation("user-123").save([1])
    assert layout(store.root) == ["4e", "4e/user-123.jsonl"]


def test_refused_ids(store: SessionStore) -> None:
    for bad in ["", "a" * (MAX_ENCODED_ID + 1), "é" * 34, "A" * 67, "x" * 10**7]:
        with pytest.raises(ValueError, match="session id"):
            store.conversation(bad)
        with pytest.raises(ValueError, match="session id"):
            store.delete(bad)
        assert bad not in store
    for bad in [b"user", 1, None, ("a",)]:
        with pytest.raises(TypeError, match="must be a str"):
            store.conversation(bad)  # type: ignore[arg-type]
        assert bad not in store
    # The limits are exact: 200 bytes encoded.
    store.conversation("é" * 33).save([1])  # 33 x 6 = 198
    store.conversation("A" * 66).save([2])  # 66 x 3 = 198
    assert sorted(store.sessions()) == sorted(["é" * 33, "A" * 66])


def test_str_subclass_ids_are_listed_as_plain_str(store: SessionStore) -> None:
    class Id(str):
        def __str__(self) -> str:
            return "other"

        def encode(self, *args: Any, **kwargs: Any) -> bytes:
            return b"other"

        def __len__(self) -> int:
            return 0

    store.conversation(Id("abc")).save([1])
    store.conversation(Id("ABC")).save([2])
    listed = list(store.sessions())
    assert sorted(listed) == ["ABC", "abc"] and all(type(s) is str for s in listed)


# --------------------------------------------------------------------------------------------- listing


def test_only_the_stores_own_names_are_listed(store: SessionStore) -> None:
    big = [{"i": i, "pad": "x" * 1000} for i in range(400)]  # > 128 KiB: an index beside it
    store.conversation("kept").save(big)
    store.conversation("other").save([1])
    codec = store.conversation("kept")
    assert Path(str(codec.path) + ".idx").exists()
    shard = codec.path.parent
    # The codec's side files...
    for side in ["kept.jsonl.torn-12", "kept.jsonl.torn-12.1", "kept.jsonl.damaged", ".kept.jsonl.tmp"]:
        (shard / side).write_bytes(b"x")
    # ...names the encoder never writes: non-canonical escapes, upper case, devices, a leading dash...
    # (each in the shard its name hashes to, so that only the name's spelling gives it away: `%6bept` would list
    # `kept` twice)
    for foreign in ["%6bept", "KEPT", "con", "-x", "%zz", "%ff", "", "a.b", "%2D%2D", "a" * 201, "x\ny", "y.jsonl\nz"]:
        (store.root / shard_of(foreign)).mkdir(exist_ok=True)
        (store.root / shard_of(foreign) / (foreign + ".jsonl")).write_bytes(b"[1]\n")
    # ...valid names behind a prefix that makes them foreign, in the shard of what follows the prefix...
    for prefix in ["X", "-", ".", "%", "%2", "a.", "\n"]:
        (store.root / shard_of("kept2")).mkdir(exist_ok=True)
        (store.root / shard_of("kept2") / (prefix + "kept2.jsonl")).write_bytes(b"[1]\n")
    # ...a valid name in the wrong shard, a folder and a link with valid names, foreign folders and files at root
    wrong = next(f"{n:02x}" for n in range(256) if f"{n:02x}" != shard_of("stray"))
    (store.root / wrong).mkdir(exist_ok=True)
    (store.root / wrong / "stray.jsonl").write_bytes(b"[1]\n")
    (shard / "folder.jsonl").mkdir()
    (store.root / shard_of("linked")).mkdir(exist_ok=True)
    os.symlink(codec.path, store.root / shard_of("linked") / "linked.jsonl")
    for foreign_dir in ["zz", "000", "F3", "tmp"]:
        (store.root / foreign_dir).mkdir()
        (store.root / foreign_dir / "kept.jsonl").write_bytes(b"[1]\n")
    (store.root / "ab.jsonl").write_bytes(b"[1]\n")
    assert sorted(store.sessions()) == ["kept", "other"]
    assert sorted(store) == ["kept", "other"]
    assert "stray" not in store and "linked" not in store and "folder" not in store


def test_sessions_streams_and_closes_its_folders(store: SessionStore) -> None:
    for i in range(300):
        store.conversation(f"s{i}").append_turn(i)
    listing = store.sessions()
    assert inspect.isgenerator(listing)
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    first = next(listing)
    assert first in {f"s{i}" for i in range(300)}
    listing.close()
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds
    assert sorted(store.sessions(), key=lambda s: int(s[1:])) == [f"s{i}" for i in range(300)]


def test_a_missing_root_holds_no_session_and_nothing_is_made_until_a_write(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "a" / "b")
    codec = store.conversation("new")
    assert list(store.sessions()) == [] and "new" not in store
    assert codec.load() == [] and len(codec) == 0 and list(codec) == []
    assert not (tmp_path / "a").exists()
    codec.append_turn({"role": "user", "content": "hi"})
    assert list(store.sessions()) == ["new"] and "new" in store


def test_sessions_are_spread_over_shards(store: SessionStore) -> None:
    count = 2000
    for i in range(count):
        stem = encode_id(f"user-{i}")
        folder = store.root / shard_of(stem)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(folder / (stem + ".jsonl"), os.O_CREAT | os.O_WRONLY, 0o600))
    assert store.conversation("user-0").path.parent == store.root / shard_of("user-0")
    sizes = Counter(p.parent.name for p in store.root.glob("*/*.jsonl"))
    assert len(sizes) == 256  # 7.8 per folder on average
    assert max(sizes.values()) < 3 * count / 256
    assert sum(1 for _ in store.sessions()) == count


def test_a_relative_root_is_fixed_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SessionStore("rel")
    monkeypatch.chdir("/")
    store.conversation("x").save([1])
    assert (tmp_path / "rel").is_dir() and store.root == tmp_path / "rel"


# ------------------------------------------------------------------------------------------ planted links


def plant_shard_link(store: SessionStore, session_id: str, target: Path) -> Path:
    store.root.mkdir(parents=True, exist_ok=True)
    link = store.root / shard_of(encode_id(session_id))
    os.symlink(target, link)
    return link


def test_a_shard_folder_planted_as_a_link_is_not_followed(store: SessionStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.jsonl").write_bytes(b'"theirs"\n')
    link = plant_shard_link(store, "victim", outside)
    with pytest.raises(OSError, match="symbolic link") as raised:
        store.conversation("victim")
    assert raised.value.errno == errno.ELOOP and raised.value.filename == str(link)
    assert str(link) in str(raised.value)
    assert "victim" not in store and list(store.sessions()) == []
    with pytest.raises(OSError, match="symbolic link"):
        store.delete("victim")
    assert (outside / "victim.jsonl").read_bytes() == b'"theirs"\n'
    assert sorted(os.listdir(outside)) == ["victim.jsonl"]


def test_a_dangling_shard_link_is_refused_rather_than_followed(store: SessionStore, tmp_path: Path) -> None:
    # The plain codec would try to make the folder the link names, forever.
    plant_shard_link(store, "victim", tmp_path / "nowhere")
    with pytest.raises(OSError, match="symbolic link"):
        store.conversation("victim")
    assert not (tmp_path / "nowhere").exists()


def test_a_conversation_file_planted_as_a_link_is_not_followed(store: SessionStore, tmp_path: Path) -> None:
    target = tmp_path / "bashrc"
    target.write_bytes(b"export X=1\n")
    store.conversation("victim").save(["mine"])
    path = store.conversation("victim").path
    path.unlink()
    os.symlink(target, path)
    with pytest.raises(OSError, match="symbolic link") as raised:
        store.conversation("victim")
    assert raised.value.filename == str(path)
    assert "victim" not in store and list(store.sessions()) == []
    with pytest.raises(OSError, match="symbolic link"):
        store.delete("victim")
    assert path.is_symlink() and target.read_bytes() == b"export X=1\n"


def test_a_dangling_file_link_is_refused_and_its_target_never_made(store: SessionStore, tmp_path: Path) -> None:
    store.conversation("victim").save(["mine"])
    path = store.conversation("victim").path
    path.unlink()
    os.symlink(tmp_path / "made-by-the-link", path)
    with pytest.raises(OSError, match="symbolic link"):
        store.conversation("victim")
    assert not (tmp_path / "made-by-the-link").exists()


@pytest.mark.parametrize("where", ["file", "shard"])
@pytest.mark.parametrize(
    "operation", ["save", "append_turn", "load", "len", "iter", "verify", "repair", "encrypt", "rotate"]
)
def test_a_link_planted_after_the_codec_was_handed_out_is_refused(
    store: SessionStore, tmp_path: Path, where: str, operation: str
) -> None:
    target_dir = tmp_path / "outside"
    target_dir.mkdir()
    target = target_dir / "victim.jsonl"
    target.write_bytes(b'"theirs"\n')
    codec = store.conversation("victim")
    if operation in ("encrypt", "rotate"):  # they need a codec with a key (encrypt: of a plain conversation)
        fernet = pytest.importorskip("cryptography.fernet")
        keyed = SessionStore(store.root, fernet_key=fernet.Fernet.generate_key(), durable=False)
        if operation == "encrypt":
            codec.save(["mine"])
        codec = keyed.conversation("victim")
    if operation != "encrypt":
        codec.save(["mine"])
    if where == "file":
        codec.path.unlink()
        os.symlink(target, codec.path)
    else:
        os.rename(codec.path.parent, tmp_path / "moved")
        os.symlink(target_dir, codec.path.parent)
    calls = {
        "save": lambda: codec.save(["attacker wins"]),
        "append_turn": lambda: codec.append_turn("attacker wins"),
        "load": codec.load,
        "len": lambda: len(codec),
        "iter": lambda: list(codec),
        "verify": codec.verify,
        "repair": codec.repair,
        "encrypt": codec.encrypt,
        "rotate": codec.rotate,
    }
    with pytest.raises(OSError, match="symbolic link"):
        calls[operation]()
    assert target.read_bytes() == b'"theirs"\n' and sorted(os.listdir(target_dir)) == ["victim.jsonl"]


def test_a_fifo_in_a_sessions_place_is_refused_without_hanging(store: SessionStore) -> None:
    path = store.conversation("pipe").path
    path.parent.mkdir(parents=True)
    os.mkfifo(path, 0o600)
    with pytest.raises(OSError, match="not a conversation file") as raised:
        store.conversation("pipe")
    assert raised.value.errno == errno.EINVAL and raised.value.filename == str(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError, match="not a conversation file"):
        store.conversation("pipe")
    assert "pipe" not in store and list(store.sessions()) == []


def test_a_file_in_a_shard_folders_place_is_refused(store: SessionStore) -> None:
    store.root.mkdir(parents=True)
    shard = store.root / shard_of(encode_id("x"))
    shard.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="not a shard folder") as raised:
        store.conversation("x")
    assert raised.value.filename == str(shard)


def test_a_root_that_is_a_link_is_the_users_choice(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    store = SessionStore(tmp_path / "link")
    store.conversation("a").save([1])
    assert list(store.sessions()) == ["a"]
    assert list(SessionStore(tmp_path / "real").sessions()) == ["a"]


# --------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("umask", [0, 0o022, 0o077])
def test_folders_are_0700_and_files_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        store = SessionStore(tmp_path / "parent" / "root")
        store.conversation("saved").save([{"i": i, "pad": "x" * 1000} for i in range(400)])  # with an index
        store.conversation("appended").append_turn({"role": "user", "content": "hi"})
        store.conversation("appended").append_turn([1, 2])
    finally:
        os.umask(old)
    folders = [tmp_path / "parent", store.root, *(p for p in store.root.iterdir())]
    data = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(folders) >= 3 and len(data) == 4  # two conversations of more than one frame: with their indexes
    assert sum(p.name.endswith(".idx") for p in data) == 2
    assert {str(p): oct(mode(p)) for p in folders} == {str(p): oct(0o700) for p in folders}
    assert {str(p): oct(mode(p)) for p in data} == {str(p): oct(0o600) for p in data}


# ------------------------------------------------------------------------------------------------- delete


def test_delete_removes_the_conversation_and_every_file_named_after_it(store: SessionStore) -> None:
    store.conversation("gone").save([{"i": i, "pad": "x" * 1000} for i in range(400)])
    for neighbour in ["gone-too", "gon", "gone.jsonl", "Gone"]:
        store.conversation(neighbour).save([neighbour])
    codec = store.conversation("gone")
    shard = codec.path.parent
    sides = ["gone.jsonl.idx", "gone.jsonl.torn-7", "gone.jsonl.torn-7.1", "gone.jsonl.damaged", ".gone.jsonl.tmp"]
    for side in sides[1:]:
        (shard / side).write_bytes(b"salvaged")
    assert all((shard / side).exists() for side in sides)
    before = {p for p in store.root.rglob("*") if p.parent != store.root}
    store.delete("gone")
    after = {p for p in store.root.rglob("*") if p.parent != store.root}
    assert before - after == {codec.path, *(shard / side for side in sides)}
    assert "gone" not in store
    assert sorted(store.sessions()) == sorted(["gone-too", "gon", "gone.jsonl", "Gone"])
    for neighbour in ["gone-too", "gon", "gone.jsonl", "Gone"]:
        assert store.conversation(neighbour).load() == [neighbour]
    assert store.conversation("gone").load() == []


def test_delete_of_an_unknown_session_raises_key_error_unless_missing_ok(store: SessionStore) -> None:
    with pytest.raises(KeyError):
        store.delete("never")  # not even the root exists
    store.conversation("other").save([1])
    with pytest.raises(KeyError):
        store.delete("never")
    assert store.delete("never", missing_ok=True) is None
    store.conversation("once").save([1])
    store.delete("once")
    with pytest.raises(KeyError):
        store.delete("once")
    store.delete("once", missing_ok=True)
    assert list(store.sessions()) == ["other"]
    assert [str(p.relative_to(store.root)) for p in store.root.rglob("*") if not p.is_dir()] == [
        f"{shard_of('other')}/other.jsonl"
    ]


def test_delete_removes_side_files_left_without_their_conversation(store: SessionStore) -> None:
    codec = store.conversation("orphan")
    codec.save([1])
    Path(str(codec.path) + ".torn-3").write_bytes(b"x")
    codec.path.unlink()
    assert "orphan" not in store
    store.delete("orphan")  # a session is also its salvaged bytes: no KeyError, and they go
    assert list(codec.path.parent.iterdir()) == []


def test_delete_waits_for_a_save_in_progress(store: SessionStore) -> None:
    started, finished = threading.Event(), threading.Event()
    store.conversation("busy").save(["old"])

    def slow() -> Any:
        started.set()
        time.sleep(0.5)
        yield "new"
        finished.set()

    saver = threading.Thread(target=lambda: store.conversation("busy").save(slow()))
    saver.start()
    started.wait()
    store.delete("busy")
    assert finished.is_set()  # the save had finished when delete went on
    saver.join()
    assert "busy" not in store and store.conversation("busy").load() == []
    assert list(store.conversation("busy").path.parent.iterdir()) == []  # no temporary file left


def test_appends_racing_delete_never_fail_and_never_tear(store: SessionStore) -> None:
    turns = 600
    errors: list[BaseException] = []

    codec = store.conversation("racy")

    def append() -> None:
        try:
            for i in range(turns):
                codec.append_turn([i, -i] if i % 3 else i)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=append)
    writer.start()
    deletes = 0
    while writer.is_alive():
        deletes += 1
        store.delete("racy", missing_ok=True)
        time.sleep(0.002)
    writer.join()
    assert errors == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stored = store.conversation("racy").load()
    # What is left is whole turns, in order: the turns appended after the last delete that removed any (maybe none).
    expected = [m for i in range(turns) for m in ([i, -i] if i % 3 else [i])]
    assert stored == expected[len(expected) - len(stored) :]
    assert deletes > 1
    codec.append_turn("end")  # the writer's codec, which remembers the file it last wrote, is not misled
    assert store.conversation("racy").load() == [*stored, "end"]


def test_a_codec_kept_across_delete_starts_a_new_conversation(store: SessionStore) -> None:
    codec = store.conversation("kept")
    codec.save(["a", "b"])
    codec.append_turn("c")
    store.delete("kept")
    codec.append_turn("after")
    assert codec.load() == ["after"] and list(store.sessions()) == ["kept"]


def test_delete_from_inside_a_write_of_the_same_session_raises_instead_of_hanging(store: SessionStore) -> None:
    store.conversation("self").save(["x"])

    def redact(message: Any) -> Any:
        store.delete("self")
        return message

    hooked = SessionStore(store.root, redact=redact, durable=False)
    with pytest.raises(RuntimeError, match="already writes"):
        hooked.conversation("self").save(["y"])  # a save redacts while it holds the lock
    assert store.conversation("self").load() == ["x"]


# -------------------------------------------------------------------------------------- options and repr


def test_the_codec_options_apply_to_every_session(tmp_path: Path) -> None:
    fernet = pytest.importorskip("cryptography.fernet")
    key = fernet.Fernet.generate_key()
    store = SessionStore(
        tmp_path, redact=lambda m: {**m, "secret": "[redacted]"}, fernet_key=key, compressed=True, durable=False
    )
    for session_id in ["alice", "Bob", "../carol"]:
        codec = store.conversation(session_id)
        assert isinstance(codec, ConversationCodec) and isinstance(codec, SessionCodec)
        assert codec.session_id == session_id and codec.durable is False
        codec.save([{"who": session_id, "secret": "s3cret"}])
        codec.append_turn({"who": session_id, "secret": "again"})
        raw = codec.path.read_bytes()
        assert raw[:1] == b"g" and b"s3cret" not in raw
        for token in raw.splitlines():
            plain = fernet.Fernet(key).decrypt(token)
            assert gzip.decompress(plain[32:]).startswith(b'{"who":')  # every frame: a gzip member, encrypted
        with pytest.raises(DecryptionError):
            ConversationCodec(codec.path).load()
        assert store.conversation(session_id).load() == [
            {"who": session_id, "secret": "[redacted]"},
            {"who": session_id, "secret": "[redacted]"},
        ]
    assert sorted(store.sessions()) == sorted(["alice", "Bob", "../carol"])


def test_bad_options_are_refused_when_the_store_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression_level"):
        SessionStore(tmp_path, compression_level=13)
    with pytest.raises(TypeError, match="compression_level"):
        SessionStore(tmp_path, compression_level="6")  # type: ignore[arg-type]
    pytest.importorskip("cryptography.fernet")
    with pytest.raises(ValueError):
        SessionStore(tmp_path, fernet_key=b"not a key")
    assert list(tmp_path.iterdir()) == []


def test_repr_shows_the_root_and_never_the_key(tmp_path: Path) -> None:
    fernet = pytest.importorskip("cryptography.fernet")
    key = fernet.Fernet.generate_key()
    for given_key in (key, key.decode(), fernet.Fernet(key)):
        store = SessionStore(tmp_path / "r", fernet_key=given_key)
        shown = repr(store) + repr(store.conversation("x"))
        assert str(tmp_path / "r") in repr(store) and "encrypted=True" in repr(store)
        assert key.decode() not in shown and key.decode()[:20] not in shown
    assert (
        repr(SessionStore(tmp_path / "r"))
        == f"SessionStore({str(tmp_path / 'r')!r}, encrypted=False, compressed=False)"
    )


def test_a_codec_whose_path_is_reassigned_is_still_checked(store: SessionStore, tmp_path: Path) -> None:
    target = tmp_path / "target.jsonl"
    target.write_bytes(b'"theirs"\n')
    codec = store.conversation("a")
    codec.save(["mine"])
    link = codec.path.with_name("b.jsonl")
    os.symlink(target, link)
    codec.path = link  # a plain attribute, as the codec's
    with pytest.raises(OSError, match="symbolic link"):
        codec.save(["x"])
    assert target.read_bytes() == b'"theirs"\n'
