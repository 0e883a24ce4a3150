"""`python -m conversation_codec`: the `conversation-codec` command (cli.py)."""

from .cli import main

raise SystemExit(main())
