"""Random (version 4) UUIDs as text, for ids made on the hot path.

`str(uuid.uuid4())` builds a `uuid.UUID` on the way (its constructor is plain Python, several
microseconds); these make the same text from the same 16 random bytes directly."""

from __future__ import annotations

import os

# RFC 9562 version 4: version bits 0100 at bits 76–79, variant bits 10 at bits 62–63.
_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_SET = (0x4 << 76) | (0x2 << 62)


def uuid4_hex() -> str:
    """32 lowercase hex digits, as `uuid.uuid4().hex`."""
    return "%032x" % ((int.from_bytes(os.urandom(16)) & _KEEP) | _SET)


def uuid4_text() -> str:
    """`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`, as `str(uuid.uuid4())`."""
    h = uuid4_hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
