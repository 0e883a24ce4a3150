"""An agent's memory surviving between two separate processes, with PII redaction and encryption.

Run it with `make demo`. The parent process plays the operator: it makes a key and starts two "sessions", each a
fresh Python process that knows nothing but the file path and the key. Session 1 talks and saves; session 2 loads
the history, continues the conversation, and saves again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from conversation_codec import ConversationCodec

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
PHONE = re.compile(r"\+?\d[\d ()-]{7,}\d")


def strip_pii(message: dict) -> dict:
    """The redact callback: runs on every message before it is written."""
    content = message.get("content")
    if not isinstance(content, str):  # tool-call messages may carry None
        return message
    return {**message, "content": PHONE.sub("[phone]", EMAIL.sub("[email]", content))}


def codec() -> ConversationCodec:
    return ConversationCodec(os.environ["DEMO_PATH"], redact=strip_pii, fernet_key=os.environ["DEMO_KEY"])


def session_1() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful travel assistant."},
        {
            "role": "user",
            "content": "Book me a table in Lyon. Reach me at ada@example.com or +33 6 12 34 56 78.",
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "find_restaurant", "arguments": '{"city": "Lyon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Le Bouchon des Filles, 20:00, 2 seats"},
        {"role": "assistant", "content": "Booked: Le Bouchon des Filles at 20:00. Bon appétit! 🍷"},
    ]
    codec().save(messages)
    print(f"  [session 1, pid {os.getpid()}] talked, then saved {len(messages)} messages")


def session_2() -> None:
    c = codec()
    history = c.load()
    print(f"  [session 2, pid {os.getpid()}] started fresh and loaded {len(history)} messages:")
    for m in history:
        print(f"      {m['role']:>9}: {m['content'] or m.get('tool_calls', [{}])[0].get('function', {}).get('name')}")
    # Each new turn is appended: the file is never rewritten, so a turn costs the same at message 10 or 1,000,000.
    c.append_turn({"role": "user", "content": "What time was the booking again? Text me on +33 6 12 34 56 78."})
    c.append_turn({"role": "assistant", "content": "20:00 at Le Bouchon des Filles."})
    print(f"  [session 2] answered from memory and appended a turn: {len(c)} messages now; the last two:")
    for m in c.load(last=2):
        print(f"      {m['role']:>9}: {m['content']}")


def main() -> None:
    from cryptography.fernet import Fernet

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "DEMO_PATH": str(Path(tmp) / "sessions" / "user-123.jsonl"),
            "DEMO_KEY": Fernet.generate_key().decode(),
        }
        print("conversation-codec demo: one conversation, two processes\n")
        for session in ("session_1", "session_2"):
            subprocess.run([sys.executable, __file__, session], env=env, check=True)
        path = Path(env["DEMO_PATH"])
        raw = path.read_bytes()
        print(f"\nOn disk: {path.name}, {len(raw)} bytes, mode {oct(path.stat().st_mode & 0o777)}")
        print(f"  starts with {raw[:40]!r}...  (a Fernet token: no plaintext)")
        assert b"Lyon" not in raw
        plain = ConversationCodec(path, fernet_key=env["DEMO_KEY"]).load()
        print(f"Decrypted with the key: {len(plain)} messages; the user's contact details were redacted:")
        print(f"  {plain[1]['content']}")
        print(f"  {plain[-2]['content']}")
        assert "ada@example.com" not in plain[1]["content"] and "+33" not in plain[-2]["content"]
        report = ConversationCodec(path, fernet_key=env["DEMO_KEY"]).verify()
        print(f"verify(): ok={report.ok}, {report.messages} messages in {report.frames} frames, index {report.index}")
        assert report.ok


if __name__ == "__main__":
    if len(sys.argv) > 1:
        {"session_1": session_1, "session_2": session_2}[sys.argv[1]]()
    else:
        main()
