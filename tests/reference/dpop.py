"""DPoP proofs (RFC 9449) and key thumbprints (RFC 7638) made by joserfc, a
reference JOSE library independent of the filter: the client side of
tests/envoy/dpop.rs.

A line protocol, one JSON object per line in and out, so one process serves
a whole test:

  {"op": "key", "name": "a", "kty": "EC" | "OKP" | "RSA"}
      -> {"jwk": <public JWK>, "thumbprint": <RFC 7638, base64url SHA-256>}
  {"op": "proof", "key": "a", "htm": "POST", "htu": "http://...", "token": "<access token>",
   optional: "iat": <seconds>, "jti": "...", "ath": "<override>" | null (omit it),
   "alg": "...", "typ": "...", "private_jwk": true, "unsigned": true (alg none),
   "hmac": true (HS256 with a fresh symmetric key)}
      -> {"proof": "<compact JWS>"}
"""
import base64
import hashlib
import json
import secrets
import sys
import time
import warnings

from joserfc import jws
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

# joserfc flags EdDSA as deprecated by RFC 9864 (in favour of Ed25519); the
# filter speaks RFC 8037's EdDSA, as IdPs do.
warnings.simplefilter("ignore")

DEFAULT_ALG = {"EC": "ES256", "OKP": "EdDSA", "RSA": "RS256"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def generate(kty: str):
    if kty == "EC":
        return ECKey.generate_key("P-256")
    if kty == "OKP":
        return OKPKey.generate_key("Ed25519")
    if kty == "RSA":
        return RSAKey.generate_key(2048)
    raise ValueError(f"unknown kty {kty}")


def proof(keys, cmd):
    key, kty = keys[cmd["key"]]
    alg = cmd.get("alg", DEFAULT_ALG[kty])
    jwk = key.as_dict(private=bool(cmd.get("private_jwk")))
    header = {"typ": cmd.get("typ", "dpop+jwt"), "alg": alg, "jwk": jwk}
    claims = {
        "jti": cmd.get("jti") or secrets.token_urlsafe(16),
        "htm": cmd["htm"],
        "htu": cmd["htu"],
        "iat": cmd.get("iat", int(time.time())),
    }
    if "ath" in cmd:
        if cmd["ath"] is not None:
            claims["ath"] = cmd["ath"]
    else:
        claims["ath"] = b64(hashlib.sha256(cmd["token"].encode()).digest())
    payload = json.dumps(claims).encode()
    if cmd.get("unsigned"):
        header["alg"] = "none"
        return f"{b64(json.dumps(header).encode())}.{b64(payload)}."
    if cmd.get("hmac"):
        header["alg"] = "HS256"
        return jws.serialize_compact(header, payload, OctKey.generate_key(256), algorithms=["HS256"])
    return jws.serialize_compact(header, payload, key, algorithms=[alg])


def main():
    keys = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            if cmd["op"] == "key":
                key = generate(cmd["kty"])
                keys[cmd["name"]] = (key, cmd["kty"])
                out = {"jwk": key.as_dict(private=False), "thumbprint": key.thumbprint()}
            elif cmd["op"] == "proof":
                out = {"proof": proof(keys, cmd)}
            else:
                out = {"error": f"unknown op {cmd['op']}"}
        except Exception as e:  # reported to the test, which fails with it
            out = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
