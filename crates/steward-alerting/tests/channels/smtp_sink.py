"""An aiosmtpd handler for the email channel's tests: every message received is written to
DIRECTORY as N.json: {"tls": bool, "mail_from": str, "rcpt_tos": [str], "data": str}.

    PYTHONPATH=tests/channels python3 -m aiosmtpd -n -l 127.0.0.1:PORT \
        --tlscert cert.pem --tlskey key.pem -c smtp_sink.Sink DIRECTORY
"""

import json
import os


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("smtp_sink.Sink takes one argument: the directory to write to")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        record = {
            "tls": session.ssl is not None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": envelope.content.decode("utf-8", "replace")
            if isinstance(envelope.content, bytes)
            else envelope.content,
        }
        tmp = os.path.join(self.directory, f".{self.count}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.directory, f"{self.count}.json"))
        return "250 Message accepted"
