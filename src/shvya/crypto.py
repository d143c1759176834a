"""Secrets kept in the database (channel tokens) are encrypted with SHVYA_SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


class SecretUnreadable(Exception):
    """The stored secret was encrypted with another SHVYA_SECRET_KEY, or was altered."""


def _fernet(secret_key: str) -> Fernet:
    # Fernet wants 32 url-safe base64 bytes; derive them from the configured key.
    digest = hashlib.sha256(b"shvya-secrets-v1:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(value: str, *, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(value.encode()).decode()


def decrypt_secret(token: str, *, secret_key: str) -> str:
    try:
        return _fernet(secret_key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "a stored channel secret cannot be decrypted: was SHVYA_SECRET_KEY changed?"
        ) from None


def mask_secret(value: str) -> str:
    """What the API shows of a secret: its last four characters."""
    return "…" + value[-4:] if len(value) > 4 else "…"
