"""A hand-built OutgoingEmail for the provider transport tests (the composer builds them in
the application; these tests only need something to hand a transport)."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP

from shvya.channels.email_message import OutgoingEmail

UNSUBSCRIBE = "<https://shvya.example/unsubscribe/tok123>, <mailto:unsub+tok123@example.com>"


def outgoing_email(
    *, from_address: str = "sales@example.com", to: str = "lead@client.test"
) -> OutgoingEmail:
    headers = (
        ("List-Unsubscribe", UNSUBSCRIBE),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("In-Reply-To", "<earlier@client.test>"),
        ("References", "<first@client.test> <earlier@client.test>"),
    )
    message = EmailMessage(policy=SMTP.clone(max_line_length=998))
    message["From"] = f"Acme Sales <{from_address}>"
    message["To"] = to
    message["Subject"] = "Your quote, Priya"
    message["Message-ID"] = "<m-1@shvya.example>"
    for name, value in headers:
        message[name] = value
    message.set_content("Hello Priya,\nyour quote is attached.\n")
    message.add_alternative("<p>Hello <b>Priya</b>, your quote is attached.</p>", subtype="html")
    # What a DKIM signer prepends: the bytes must reach the provider exactly as they are.
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; b=abc\r\n" + bytes(message)
    return OutgoingEmail(
        from_address=from_address,
        from_name="Acme Sales",
        to=to,
        subject="Your quote, Priya",
        text="Hello Priya,\nyour quote is attached.\n",
        html="<p>Hello <b>Priya</b>, your quote is attached.</p>",
        message_id="m-1@shvya.example",
        headers=headers,
        raw=raw,
    )
