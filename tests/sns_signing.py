"""Sign SNS messages as SNS does, with a key and certificate made at test time."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"


@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey
    pem: bytes

    def sign(
        self, body: dict[str, Any], *, version: str = "1", url: str = CERT_URL
    ) -> dict[str, Any]:
        """The message signed as SNS signs it, built here from the documentation."""
        if body["Type"] == "Notification":
            names = ["Message", "MessageId", *(["Subject"] if "Subject" in body else [])]
            names += ["Timestamp", "TopicArn", "Type"]
        else:
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn"]
            names += ["Type"]
        text = "".join(f"{name}\n{body[name]}\n" for name in names).encode()
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text, padding.PKCS1v15(), algorithm)
        return {
            **body,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": url,
        }


def make_signer() -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return Signer(key=key, pem=certificate.public_bytes(serialization.Encoding.PEM))
