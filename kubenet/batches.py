"""Rulesets too large for one netlink transaction, cut into several.

``iptables-restore`` (the nf_tables flavour) and ``nft -f`` each send their whole input to
the kernel as one batch, one netlink message. Root can let the socket buffer grow to fit
(``SO_SNDBUFFORCE``); in the rootless tier that needs CAP_NET_ADMIN in the host's user
namespace, so a batch over the default buffer (a few thousand rules) fails with "Message
too long" and changes nothing. Then the same rules go in several transactions, in order:
the result is the same ruleset, but it is no longer swapped in atomically.
"""

from __future__ import annotations

__all__ = ["MESSAGE_TOO_LONG", "BATCH_LINES", "split_restore", "split_nft"]

MESSAGE_TOO_LONG = "Message too long"
BATCH_LINES = 500  # lines per transaction; ~1,900 iptables lines overflow rootless


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def split_restore(text: str, max_lines: int = BATCH_LINES) -> list[str]:
    """``iptables-restore --noflush`` input -> several inputs with the same effect.

    Per table, in order: the chain declarations (each flushes its chain), the rules, the
    ``-X`` deletions (by then no rule refers to those chains); every line counts towards
    ``max_lines``, since each becomes part of the netlink message.
    """
    if max_lines < 1:
        raise ValueError("max_lines must be at least 1")
    parts: list[str] = []
    table, decls, rules, deletes = "", [], [], []

    def flush() -> None:
        for chunk in _chunks([*decls, *rules, *deletes], max_lines):
            parts.append("\n".join([f"*{table}", *chunk, "COMMIT"]) + "\n")

    for line in text.splitlines():
        if line.startswith("*"):
            table, decls, rules, deletes = line[1:], [], [], []
        elif line == "COMMIT":
            flush()
            table = ""
        elif line.startswith(":"):
            decls.append(line)
        elif line.startswith("-X "):
            deletes.append(line)
        elif line.strip() and not line.startswith("#"):
            rules.append(line)
    return parts


def split_nft(text: str, max_lines: int = BATCH_LINES) -> list[str]:
    """``nft -f`` input of one command a line -> several inputs run in order."""
    if max_lines < 1:
        raise ValueError("max_lines must be at least 1")
    commands = [line for line in text.splitlines() if line.strip()]
    return ["\n".join(chunk) + "\n" for chunk in _chunks(commands, max_lines)]
