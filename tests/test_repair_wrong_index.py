"""repair() of a file whose only fault is a wrong index (found while pinning down the torn tail at byte 0)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from conversation_codec import ConversationCodec


def test_repair_of_a_wrong_index_keeps_the_conversation(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path)
    codec.save([{"a": 1}, {"a": 2}])
    codec.append_turn({"b": 1})
    codec.append_turn([{"c": 1}, {"c": 2}])
    messages = codec.load()
    # An index that says the last frame holds 3 messages, with every CRC right: believed, and wrong.
    index_path = Path(str(conv_path) + ".idx")
    index = bytearray(index_path.read_bytes())
    last = len(index) - 32
    struct.pack_into("<I", index, last + 12, 3)
    struct.pack_into("<I", index, last + 28, zlib.crc32(bytes(index[last : last + 28])))
    index_path.write_bytes(bytes(index))
    assert codec.verify().index.startswith("wrong")
    codec.repair()
    assert codec.load() == messages
    assert codec.verify().ok
