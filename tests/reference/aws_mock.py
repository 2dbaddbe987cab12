"""A mock of AWS for tests/envoy/sigv4.rs, built on references nobody here wrote.

- Bedrock: every request's SigV4 signature is recomputed with botocore's
  SigV4Auth from what arrived (method, path, query, the signed headers, the
  body) and the secret of its access key; a mismatch, a payload hash that is
  not the body's, a date more than 5 minutes off or a session token that is
  not the key's is answered 403 as AWS answers it. Keys: the static ones
  given on the command line and every temporary one STS issued.
- STS: moto's server (moto[server]) answers AssumeRoleWithWebIdentity;
  a front counts the calls, records the credentials issued, and can be made
  to fail (503) or to shorten the Expiration it returns.

Usage: aws_mock.py AKID:SECRET[:TOKEN]...; prints {"bedrock": port, "sts": port}
and serves until stdin closes. Control and state on each port under /_mock/.
"""
import datetime
import hashlib
import json
import re
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

LOCK = threading.Lock()
KEYS = {}  # access key id -> (secret, token or None)
STATE = {"sts_calls": 0, "sts_down": False, "sts_lifetime": None, "web_identity_tokens": [],
         "bedrock": []}
AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)


def verify(method, raw_path, headers, body):
    """None if the signature is AWS's, else the reason."""
    auth = headers.get("authorization")
    if auth is None:
        return "no Authorization header"
    m = AUTH_RE.fullmatch(auth)
    if not m:
        return "malformed Authorization: " + auth[:80]
    akid, date, region, service, signed, _ = m.groups()
    with LOCK:
        key = KEYS.get(akid)
    if key is None:
        return "unknown access key " + akid
    secret, token = key
    if token is not None and headers.get("x-amz-security-token") != token:
        return "x-amz-security-token is not the key's session token"
    if headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 is not the SHA-256 of the body received"
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return "bad x-amz-date"
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    if abs((now - when).total_seconds()) > 300 or not amz_date.startswith(date):
        return "x-amz-date too far from now or from the credential scope"
    path, _, query = raw_path.partition("?")
    params = []
    for pair in query.split("&"):
        if pair:
            k, _, v = pair.partition("=")
            params.append((urllib.parse.unquote(k), urllib.parse.unquote(v)))
    request = AWSRequest(method=method, url="http://" + headers["host"] + path, data=body,
                         params=params)
    for name in signed.split(";"):
        for value in headers.get_all(name) or []:
            request.headers[name] = value
    signer = botocore.auth.SigV4Auth(Credentials(akid, secret, token), service, region)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        signer.add_auth(request)
    if request.headers["Authorization"] != auth:
        return "signature mismatch: botocore computed " + request.headers["Authorization"]
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, doc, content_type="application/json"):
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def control(self):
        url = urllib.parse.urlsplit(self.path)
        args = dict(urllib.parse.parse_qsl(url.query))
        with LOCK:
            if "down" in args:
                STATE["sts_down"] = args["down"] == "1"
            if "lifetime" in args:
                STATE["sts_lifetime"] = int(args["lifetime"]) if args["lifetime"] else None
            self.reply(200, {k: v for k, v in STATE.items()})

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()


class Bedrock(Handler):
    def handle_any(self):
        if self.path.startswith("/_mock/"):
            return self.control()
        body = self.body()
        reason = verify(self.command, self.path, self.headers, body)
        with LOCK:
            STATE["bedrock"].append({"path": self.path, "reason": reason,
                                     "authorization": self.headers.get("authorization"),
                                     "headers": dict(self.headers.items()),
                                     "body_sha256": hashlib.sha256(body).hexdigest()})
        if reason is not None:
            return self.reply(403, {"message": "The request signature we calculated does not match "
                                               "the signature you provided. (" + reason + ")"})
        self.reply(200, {"output": {"message": {"role": "assistant",
                                                "content": [{"text": "signed ok"}]}},
                         "path": self.path})


def set_expiration(xml, lifetime):
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return re.sub(rb"<Expiration>[^<]*</Expiration>", b"<Expiration>" + stamp.encode()
                  + b"</Expiration>", xml)


class Sts(Handler):
    moto_port = 0

    def handle_any(self):
        if self.path.startswith("/_mock/"):
            return self.control()
        body = self.body()
        with LOCK:
            STATE["sts_calls"] += 1
            down, lifetime = STATE["sts_down"], STATE["sts_lifetime"]
            form = dict(urllib.parse.parse_qsl(body.decode()))
            STATE["web_identity_tokens"].append(form.get("WebIdentityToken"))
        if down:
            return self.reply(503, b"<ErrorResponse><Error><Code>ServiceUnavailable</Code></Error></ErrorResponse>",
                              "text/xml")
        forward = urllib.request.Request(
            f"http://127.0.0.1:{self.moto_port}{self.path}", data=body, method=self.command,
            headers={"Host": "sts.amazonaws.com",
                     "Content-Type": self.headers.get("content-type", "")})
        try:
            with urllib.request.urlopen(forward, timeout=10) as r:
                status, xml = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, xml = e.code, e.read()
        if status == 200:
            if lifetime is not None:
                xml = set_expiration(xml, lifetime)
            akid = re.search(rb"<AccessKeyId>([^<]+)</AccessKeyId>", xml)
            secret = re.search(rb"<SecretAccessKey>([^<]+)</SecretAccessKey>", xml)
            token = re.search(rb"<SessionToken>([^<]+)</SessionToken>", xml)
            if akid and secret and token:
                with LOCK:
                    KEYS[akid.group(1).decode()] = (secret.group(1).decode(),
                                                    token.group(1).decode())
        self.reply(status, xml, "text/xml")


def main():
    for spec in sys.argv[1:]:
        parts = spec.split(":")
        KEYS[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else None)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    Sts.moto_port = moto.get_host_and_port()[1]
    servers = {name: ThreadingHTTPServer(("127.0.0.1", 0), handler)
               for name, handler in (("bedrock", Bedrock), ("sts", Sts))}
    for server in servers.values():
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({n: s.server_address[1] for n, s in servers.items()}), flush=True)
    sys.stdin.read()  # until the test closes stdin (or dies)


if __name__ == "__main__":
    main()
