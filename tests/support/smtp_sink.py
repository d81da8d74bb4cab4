"""A real SMTP server for the email tests: aiosmtpd (PyPI) on 127.0.0.1:PORT, each message it
accepts written whole (the envelope's sender and recipients, then the message as received) to a
file of its own in FOLDER, with how it came (X-Received-Over: plain, starttls or tls). Prints
"ready" once it listens.

    python3 smtp_sink.py PORT FOLDER [starttls|starttls-offered|tls CERT KEY]

starttls: STARTTLS offered and required before MAIL; starttls-offered: offered, not required
(a client that does not take it could send in plain text); tls: TLS from the first byte.
"""
import ssl
import threading
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        tmp = os.path.join(self.folder, f".{self.n}.tmp")
        with open(tmp, "wb") as f:
            f.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
            f.write(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(f"X-Received-Over: {over(server, session)}\r\n".encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.folder, f"{self.n}.eml"))
        return "250 Message accepted for delivery"



def over(server, session):
    """How the message came: in plain text, after STARTTLS, or over TLS from the first byte."""
    if server.transport.get_extra_info("ssl_object") is None:
        return "plain"
    return "starttls" if session.ssl is not None else "tls"


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "plain"
    kwargs = {}
    if mode != "plain":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
        if mode == "tls":
            kwargs["ssl_context"] = ctx
        else:
            kwargs["tls_context"] = ctx
            kwargs["require_starttls"] = mode == "starttls"
    c = Controller(Sink(folder), hostname="127.0.0.1", port=port, **kwargs)
    c.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        c.stop()


if __name__ == "__main__":
    main()
