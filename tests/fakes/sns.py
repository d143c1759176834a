"""A fake Amazon SNS on 127.0.0.1: a self-signed signing certificate served at its
SigningCertURL, deliveries signed as SNS signs them (SignatureVersion 1: SHA1withRSA, 2:
SHA256withRSA over the documented keys, docs/email-feedback.md 1), and a SubscribeURL that
records each confirmation it receives."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from shvya.channels.feedback import sns_string_to_sign


def _certificate(key: rsa.RSAPrivateKey, name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class FakeSNS:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = _certificate(self.key, "sns.fake.amazonaws.test")
        self.confirmations: list[str] = []
        self.cert_fetches = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/cert.pem"):
                    fake.cert_fetches += 1
                    body = fake.certificate
                elif self.path.startswith("/confirm"):
                    fake.confirmations.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSNS:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url_pattern(self) -> str:
        return "^" + self.url.replace(".", r"\.") + "/"

    def sign(self, envelope: dict[str, Any], *, key: rsa.RSAPrivateKey | None = None) -> None:
        algorithm = hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()
        signature = (key or self.key).sign(
            sns_string_to_sign(envelope), padding.PKCS1v15(), algorithm
        )
        envelope["Signature"] = base64.b64encode(signature).decode()

    def notification(
        self,
        topic_arn: str,
        message: dict[str, Any],
        *,
        version: str = "1",
        message_id: str | None = None,
        subject: str | None = None,
    ) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": json.dumps(message),
            "Timestamp": "2026-11-26T10:00:00.000Z",
            "SignatureVersion": version,
            "SigningCertURL": f"{self.url}/cert.pem",
            "UnsubscribeURL": f"{self.url}/unsubscribe",
        }
        if subject is not None:
            envelope["Subject"] = subject
        self.sign(envelope)
        return envelope

    def subscription(self, topic_arn: str, *, version: str = "2") -> dict[str, Any]:
        token = uuid.uuid4().hex
        envelope: dict[str, Any] = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": f"You have chosen to subscribe to the topic {topic_arn}.",
            "SubscribeURL": f"{self.url}/confirm?Token={token}",
            "Timestamp": "2026-11-26T10:00:00.000Z",
            "SignatureVersion": version,
            "SigningCertURL": f"{self.url}/cert.pem",
        }
        self.sign(envelope)
        return envelope
