"""API tokens: shown once, stored as a salted scrypt hash, checked in constant time."""

from __future__ import annotations

from medlake.access.tokens import hash_token, new_token, token_id_of, token_matches


def test_a_new_token_matches_its_hash_and_nothing_else() -> None:
    token = new_token()
    assert token.token not in token.token_hash
    assert token_matches(token.token, token.token_hash)
    assert not token_matches(token.token + "x", token.token_hash)
    assert not token_matches(new_token().token, token.token_hash)
    assert token_id_of(token.token) == token.token_id


def test_hashes_are_salted_and_malformed_input_is_refused() -> None:
    assert hash_token("mlk_abcdefgh_s") != hash_token("mlk_abcdefgh_s")
    assert token_id_of("Bearer xyz") is None
    assert token_id_of("mlk_short_secret") is None
    assert not token_matches("anything", "not$a$hash")
    assert not token_matches("anything", "bcrypt$1$2$3$00$00")
