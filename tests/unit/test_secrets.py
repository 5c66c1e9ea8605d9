import logging

import pytest
from cryptography.fernet import Fernet

from conveyor.errors import ConfigurationError
from conveyor.secrets import (
    MASK,
    MaskingFilter,
    SecretBox,
    is_encrypted,
    keep_unchanged_secrets,
    mask_config,
    mask_text,
)


def test_encrypt_config_touches_only_secret_fields() -> None:
    box = SecretBox([Fernet.generate_key()])
    # A secret long enough that random ciphertext cannot contain it by chance (a 2-letter
    # one turned up in the base64 text about once in 40 runs).
    secret = "correct-horse-battery"
    stored = box.encrypt_config({"host": "h", "password": secret}, {"password"})
    assert stored["host"] == "h"
    assert is_encrypted(stored["password"]) and secret not in stored["password"]
    assert box.decrypt_config(stored, {"password"}) == {"host": "h", "password": secret}


def test_rotation_keeps_old_secrets_readable_and_moves_them_to_the_new_key() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    stored = SecretBox([old]).encrypt("pw")
    both = SecretBox([new, old])
    rotated = both.rotate(stored)
    assert SecretBox([new]).decrypt(rotated) == "pw"
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        SecretBox([old]).decrypt(rotated)


def test_masking_and_write_only_semantics() -> None:
    assert mask_config({"password": "x", "token": None}, {"password", "token"}) == {
        "password": MASK,
        "token": None,
    }
    old = {"password": "enc-old", "host": "a"}
    assert keep_unchanged_secrets({"host": "b"}, old, {"password"}) == {
        "host": "b",
        "password": "enc-old",
    }
    assert keep_unchanged_secrets({"password": MASK}, old, {"password"})["password"] == "enc-old"
    assert keep_unchanged_secrets({"password": "new"}, old, {"password"})["password"] == "new"


def test_mask_text_hides_url_passwords_and_known_secrets() -> None:
    text = "connect postgresql://app:hunter22@db:5432/x failed; token abcd1234"
    masked = mask_text(text, ["abcd1234"])
    assert "hunter22" not in masked and "abcd1234" not in masked
    assert "postgresql://app:********@db:5432/x" in masked


def test_logging_filter_masks_registered_secrets(caplog: pytest.LogCaptureFixture) -> None:
    flt = MaskingFilter()
    flt.register("sup3r-secret")
    logger = logging.getLogger("test.masking")
    logger.addFilter(flt)
    with caplog.at_level(logging.INFO, logger="test.masking"):
        logger.info("password is %s", "sup3r-secret")
    assert "sup3r-secret" not in caplog.text
    assert MASK in caplog.text
