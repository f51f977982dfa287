"""Unpadded base64url (RFC 4648 §5, no `=`): how stored secrets and client-secret hashes spell
their bytes."""

from __future__ import annotations

import base64


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    """The bytes of `text`, padded or not (`binascii.Error` when it is not base64url)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
