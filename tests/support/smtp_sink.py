"""A real SMTP server for the email tests: aiosmtpd (PyPI) on 127.0.0.1:PORT, each message it
accepts written whole (the envelope's sender and recipients, then the message as received) to a
file of its own in FOLDER. Prints "ready" once it listens.

    python3 smtp_sink.py PORT FOLDER
"""
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
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.folder, f"{self.n}.eml"))
        return "250 Message accepted for delivery"


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    c = Controller(Sink(folder), hostname="127.0.0.1", port=port)
    c.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        c.stop()


if __name__ == "__main__":
    main()
