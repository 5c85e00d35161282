"""A sendmail stand-in for Zaqar's ``smtp_mode = third_part``.

    python -m tests.apps.sendmail DIR


Reads the message on stdin and writes it to ``DIR/<recipient>.eml`` (appending); exits 1
without writing when the recipient's local part starts with ``fail``, as a mail
transfer agent that refuses the message would.
"""

from __future__ import annotations

import email
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    directory = Path(argv[0])
    text = sys.stdin.read()
    recipient = str(email.message_from_string(text).get("to", "unknown"))
    if recipient.startswith("fail"):
        print(f"refused: {recipient}", file=sys.stderr)
        return 1
    with (directory / f"{recipient}.eml").open("a") as out:
        out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
