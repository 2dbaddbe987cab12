"""Signatures made and judged by Python's `cryptography` (OpenSSL): the
reference for tests/envoy/crypto_reference.rs, which checks that our
verifiers give the same verdict on every case.

Usage: signatures.py <seed> <cases per algorithm>   (JSON on stdout)
"""
import base64
import json
import random
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big")


HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
CURVES = {"ES256": (ec.SECP256R1, "P-256", 32, "256"), "ES384": (ec.SECP384R1, "P-384", 48, "384"),
          "ES512": (ec.SECP521R1, "P-521", 66, "512")}


class Key:
    def __init__(self, alg, rng):
        self.alg = alg
        if alg[:2] in ("RS", "PS"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=rng.choice([2048, 3072]))
            numbers = self.private.public_key().public_numbers()
            size = (numbers.n.bit_length() + 7) // 8
            self.jwk = {"kty": "RSA", "n": b64(int_bytes(numbers.n, size)), "e": b64(int_bytes(numbers.e, 3))}
        elif alg.startswith("ES"):
            curve, crv, size, _ = CURVES[alg]
            self.private = ec.generate_private_key(curve())
            numbers = self.private.public_key().public_numbers()
            self.jwk = {"kty": "EC", "crv": crv, "x": b64(int_bytes(numbers.x, size)), "y": b64(int_bytes(numbers.y, size))}
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
            raw = self.private.public_key().public_bytes_raw()
            self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        else:
            self.secret = bytes(rng.getrandbits(8) for _ in range(64))
            self.jwk = {"kty": "oct", "k": b64(self.secret)}

    def sign(self, msg: bytes) -> bytes:
        a = self.alg
        if a.startswith("RS"):
            return self.private.sign(msg, padding.PKCS1v15(), HASHES[a[2:]]())
        if a.startswith("PS"):
            h = HASHES[a[2:]]
            return self.private.sign(msg, padding.PSS(mgf=padding.MGF1(h()), salt_length=h.digest_size), h())
        if a.startswith("ES"):
            _, _, size, bits = CURVES[a]
            r, s = decode_dss_signature(self.private.sign(msg, ec.ECDSA(HASHES[bits]())))
            return int_bytes(r, size) + int_bytes(s, size)
        if a == "EdDSA":
            return self.private.sign(msg)
        mac = hmac.HMAC(self.secret, HASHES[a[2:]]())
        mac.update(msg)
        return mac.finalize()

    def verify(self, msg: bytes, sig: bytes) -> bool:
        a = self.alg
        try:
            if a.startswith("RS"):
                self.private.public_key().verify(sig, msg, padding.PKCS1v15(), HASHES[a[2:]]())
            elif a.startswith("PS"):
                h = HASHES[a[2:]]
                self.private.public_key().verify(sig, msg, padding.PSS(mgf=padding.MGF1(h()), salt_length=h.digest_size), h())
            elif a.startswith("ES"):
                _, _, size, bits = CURVES[a]
                if len(sig) != 2 * size:
                    return False
                r, s = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
                self.private.public_key().verify(encode_dss_signature(r, s), msg, ec.ECDSA(HASHES[bits]()))
            elif a == "EdDSA":
                self.private.public_key().verify(sig, msg)
            else:
                mac = hmac.HMAC(self.secret, HASHES[a[2:]]())
                mac.update(msg)
                mac.verify(sig)
            return True
        except (InvalidSignature, ValueError):
            return False


def tamper(rng, msg: bytes, sig: bytes, other: bytes):
    kind = rng.randrange(6)
    if kind == 0:  # a flipped bit in the signature
        i = rng.randrange(len(sig))
        return msg, sig[:i] + bytes([sig[i] ^ (1 << rng.randrange(8))]) + sig[i + 1:]
    if kind == 1:  # a flipped byte in the message
        i = rng.randrange(len(msg))
        return msg[:i] + bytes([msg[i] ^ 0x01]) + msg[i + 1:], sig
    if kind == 2:  # cut short
        return msg, sig[:-1]
    if kind == 3:  # one byte longer
        return msg, sig + b"\x00"
    if kind == 4:  # another key's signature on the same message
        return msg, other
    return msg, bytes(len(sig))  # all zero


def main():
    seed, per_alg = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    cases = []
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
                "HS256", "HS384", "HS512"]:
        key, stranger = Key(alg, rng), Key(alg, rng)
        for n in range(per_alg):
            msg = (b64(json.dumps({"alg": alg}).encode()) + "." + b64(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200))))).encode()
            sig = key.sign(msg)
            if n % 2 == 0:
                test_msg, test_sig = msg, sig
            else:
                test_msg, test_sig = tamper(rng, msg, sig, stranger.sign(msg))
            cases.append({"alg": alg, "jwk": key.jwk, "signing_input": test_msg.decode("latin-1"),
                          "signature": b64(test_sig), "valid": key.verify(test_msg, test_sig)})
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
