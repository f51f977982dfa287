"""The hot path's UUID text: version 4, RFC variant, the same text `uuid.UUID` would give."""

from __future__ import annotations

import uuid

from rewardmiles import ids


def test_uuid4_text_is_a_version_4_uuid_in_canonical_form() -> None:
    seen = set()
    for _ in range(5_000):
        text = ids.uuid4_text()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 5_000


def test_uuid4_hex_is_a_version_4_uuid_in_hex() -> None:
    for _ in range(5_000):
        text = ids.uuid4_hex()
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text
        assert len(text) == 32
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_every_random_bit_is_used() -> None:
    """The 122 random bits all vary (a mask that dropped some would show as a constant bit)."""
    ored, anded = 0, (1 << 128) - 1
    for _ in range(2_000):
        value = int(ids.uuid4_hex(), 16)
        ored |= value
        anded &= value
    fixed = (0xF << 76) | (0x3 << 62)
    assert ored | fixed == (1 << 128) - 1
    assert anded & ~fixed == 0
