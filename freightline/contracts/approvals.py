"""Signed approvals: an approval that raw Temporal access alone cannot make in someone's name.

A project whose ProjectConfig lists ``approvalKeys`` (a Freightline
extension: Ed25519 public keys, base64 of the 32 raw bytes) accepts an
approve or reject only with a signature by one of the matching private keys
over the promotion's workflow ID, the decision, the user, the comment and the
time it was signed (:func:`approval_payload`). The web UI holds the private key
(``FREIGHTLINE_UI_SIGNING_KEY``) and signs for the person it authenticated; the
Promotion workflow checks the signature where it checks the approver list (the
update validator, and the signal handler), with the key from its plan. A
signature is good for :data:`SIGNATURE_MAX_AGE` after it was made, and only
for the promotion, decision, user and comment it names.

Pure functions over bytes: the workflow calls :func:`signature_refusal` with its
own clock (``workflow.now()``), so a signal replays the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from freightline.contracts.promotion import ApprovalMessage
from freightline.errors import ConfigError

__all__ = [
    "SIGNATURE_MAX_AGE",
    "approval_payload",
    "new_signing_key",
    "public_key_of",
    "sign_approval",
    "signature_refusal",
]

SIGNATURE_MAX_AGE = timedelta(minutes=5)
"""How long after it was signed an approval is accepted (and how far ahead a clock may be)."""


def approval_payload(promotion: str, decision: str, message: ApprovalMessage) -> bytes:
    """The bytes signed: canonical JSON of what the approval says."""
    return json.dumps(
        {
            "promotion": promotion,
            "decision": decision,
            "user": message.user,
            "comment": message.comment,
            "signedAt": message.signed_at.isoformat() if message.signed_at else None,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def _private_key(seed: str) -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(seed, validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "the approval signing key is not base64 of 32 bytes "
            "(make one with `freightline ui-keygen`)"
        ) from None


def new_signing_key() -> str:
    """A new private key (base64 of its 32-byte seed)."""
    from cryptography.hazmat.primitives import serialization

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw).decode()


def public_key_of(seed: str) -> str:
    """The public key (base64, what ``approvalKeys`` lists) of a private key."""
    from cryptography.hazmat.primitives import serialization

    raw = (
        _private_key(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def sign_approval(
    seed: str, promotion: str, decision: str, message: ApprovalMessage, now: datetime
) -> ApprovalMessage:
    """``message`` signed now by the private key ``seed`` (base64)."""
    stamped = message.model_copy(update={"signed_at": now, "signature": None})
    signature = _private_key(seed).sign(approval_payload(promotion, decision, stamped))
    return stamped.model_copy(update={"signature": base64.b64encode(signature).decode()})


def signature_refusal(
    keys: tuple[str, ...], promotion: str, decision: str, message: ApprovalMessage, now: datetime
) -> str:
    """Why a signed approval is not acceptable ("" when it is); ``keys`` are the project's."""
    if not message.signature or message.signed_at is None:
        return (
            "this project accepts only signed approvals (approvalKeys): approve in Freightline's "
            "web UI, or sign with a key the project lists"
        )
    age = now - message.signed_at
    if age > SIGNATURE_MAX_AGE or -age > SIGNATURE_MAX_AGE:
        return f"the approval's signature is from {message.signed_at.isoformat()}: too old or ahead"
    try:
        signature = base64.b64decode(message.signature, validate=True)
    except binascii.Error:
        return "the approval's signature is not base64"
    payload = approval_payload(promotion, decision, message)
    for key in keys:
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(key)).verify(signature, payload)
        except (InvalidSignature, ValueError, binascii.Error):
            continue
        return ""
    return "the approval's signature does not match any of the project's approvalKeys"
