"""Unpadded base64url, the one spelling of the stored secrets and the client-secret hashes."""

from __future__ import annotations

import base64
import os

from rewardmiles import codec


def test_unpadded_base64url_round_trips_every_length() -> None:
    for size in range(40):
        raw = os.urandom(size)
        text = codec.b64url(raw)
        assert "=" not in text
        assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert text == base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert codec.unb64url(text) == raw
        assert codec.unb64url(base64.urlsafe_b64encode(raw).decode()) == raw  # padded: as well
