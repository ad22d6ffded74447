"""Order ids and accounts (domain/ids.py, domain/users.py): UUIDv7 layout (version and variant bits,
time order, millisecond extraction), user ids, and scrypt password hashing with malformed stored
hashes refused rather than crashing. Pure: no I/O."""

from __future__ import annotations

import base64
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsale.domain import ids, users

# --- uuid7 ----------------------------------------------------------------------------------------


def test_version_and_variant_bits_follow_rfc_9562() -> None:
    for _ in range(200):
        value = ids.uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 0x7
        assert (value.int >> 62) & 0b11 == 0b10


def test_milliseconds_come_back_out() -> None:
    assert ids.uuid7_ms(ids.uuid7(1_795_780_800_123)) == 1_795_780_800_123
    assert ids.uuid7_ms(ids.uuid7(0)) == 0


def test_default_time_is_now() -> None:
    before = int(time.time() * 1000)
    made = ids.uuid7_ms(ids.uuid7())
    after = int(time.time() * 1000)
    assert before <= made <= after


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_any_48_bit_millisecond_round_trips(ms: int) -> None:
    value = ids.uuid7(ms)
    assert ids.uuid7_ms(value) == ms
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_only_48_bits_of_time_are_kept() -> None:
    assert ids.uuid7_ms(ids.uuid7(2**48 + 5)) == 5


@given(
    st.integers(min_value=0, max_value=2**48 - 2),
    st.integers(min_value=1, max_value=10**6),
)
def test_a_later_millisecond_sorts_later_as_text_and_as_number(ms: int, gap: int) -> None:
    early, late = ids.uuid7(ms), ids.uuid7(min(ms + gap, 2**48 - 1))
    assert early < late
    assert str(early) < str(late)  # PostgreSQL's uuid order and the text order agree


def test_ids_made_in_the_same_millisecond_differ() -> None:
    made = {ids.uuid7(1_000) for _ in range(10_000)}
    assert len(made) == 10_000  # 74 random bits per id


def test_canonical_text_form() -> None:
    text = str(ids.uuid7())
    assert len(text) == 36
    assert text[14] == "7"
    assert text[19] in "89ab"


# --- users ----------------------------------------------------------------------------------------


def test_user_ids_are_prefixed_unique_and_fit_the_token_subject_rule() -> None:
    made = {users.new_user_id() for _ in range(1000)}
    assert len(made) == 1000
    for user_id in made:
        assert user_id.startswith("u-")
        assert len(user_id) == 34
        assert user_id[2:].isalnum()


@pytest.fixture(scope="module")
def stored() -> str:
    # One hash for the module: scrypt costs ~50 ms per call by design.
    return users.hash_password("correct horse battery staple")


def test_right_password_verifies(stored: str) -> None:
    assert users.verify_password("correct horse battery staple", stored)


@pytest.mark.parametrize(
    "attempt",
    [
        "",
        "correct horse battery stapl",
        "Correct horse battery staple",
        "correct horse battery staple ",
    ],
)
def test_wrong_password_does_not_verify(stored: str, attempt: str) -> None:
    assert not users.verify_password(attempt, stored)


def test_hash_format_records_scheme_cost_salt_and_digest(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt)) == users.SALT_BYTES
    assert len(base64.b64decode(digest)) == 64
    assert "correct" not in stored


def test_each_hash_has_its_own_salt() -> None:
    assert users.hash_password("same") != users.hash_password("same")


def test_a_given_salt_gives_the_same_hash() -> None:
    salt = b"\x01" * 16
    assert users.hash_password("pw", salt=salt) == users.hash_password("pw", salt=salt)


def test_non_ascii_passwords_work() -> None:
    stored = users.hash_password("pässwörd-🔑", salt=b"\x02" * 16)
    assert users.verify_password("pässwörd-🔑", stored)
    assert not users.verify_password("passwort-🔑", stored)


def _with(stored: str, index: int, value: str) -> str:
    parts = stored.split("$")
    parts[index] = value
    return "$".join(parts)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda _: "",
        lambda _: "not a hash",
        lambda s: s + "$extra",
        lambda s: s.rsplit("$", 1)[0],
        lambda s: _with(s, 0, "bcrypt"),
        lambda s: _with(s, 1, "abc"),
        lambda s: _with(s, 1, "1000"),  # not a power of two
        lambda s: _with(s, 2, "0"),
        lambda s: _with(s, 3, "-1"),
        lambda s: _with(s, 1, str(10**30)),
        lambda s: _with(s, 2, "-8"),
        lambda s: _with(s, 4, "!!!notbase64"),
        lambda s: _with(s, 5, "é"),
        lambda s: _with(s, 5, base64.b64encode(b"short").decode()),
    ],
)
def test_malformed_stored_hashes_are_refused_without_raising(stored: str, mangle: object) -> None:
    assert callable(mangle)
    assert users.verify_password("correct horse battery staple", mangle(stored)) is False


def test_a_password_that_cannot_be_encoded_is_refused() -> None:
    stored = users.hash_password("pw", salt=b"\x03" * 16)
    assert users.verify_password("\ud800", stored) is False  # a lone surrogate has no UTF-8 form
