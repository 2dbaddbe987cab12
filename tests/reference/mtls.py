"""The client side of tests/envoy/mtls.rs (RFC 8705 certificate-bound tokens),
with Python's `cryptography` and standard `ssl`: nothing of it is the filter's.

  mtls.py certs <dir>
      Writes a test CA, a server certificate for localhost/127.0.0.1 and two
      client certificates (a, b) with their keys into <dir> (a temporary
      directory: no key is ever committed) and prints
      {"x5t#S256": {"a": ..., "b": ...}}: base64url SHA-256 of each client
      certificate's DER, the value an authorization server puts in cnf.
  mtls.py request <port> <ca.pem> <method> <path> <authorization> [<cert.pem> <key.pem>]
      Sends the request over TLS to 127.0.0.1:<port> (client certificate when given) and
      prints {"status", "headers": [[name, value]...], "body"}.
"""
import base64
import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import ssl
import sys


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def certs(out_dir: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, file):
        with open(os.path.join(out_dir, file), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    def write_cert(cert, file):
        with open(os.path.join(out_dir, file), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("ai-auth test CA")).issuer_name(name("ai-auth test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write_cert(ca, "ca.pem")

    def leaf(cn, usage, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    key, cert = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                     [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    write_key(key, "server-key.pem")
    write_cert(cert, "server.pem")
    thumbprints = {}
    for who in ["a", "b"]:
        key, cert = leaf(f"agent {who}", ExtendedKeyUsageOID.CLIENT_AUTH)
        write_key(key, f"client-{who}-key.pem")
        write_cert(cert, f"client-{who}.pem")
        thumbprints[who] = b64(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())
    json.dump({"x5t#S256": thumbprints}, sys.stdout)


def request(port, ca, method, path, authorization, cert=None, key=None) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
    headers = {"content-type": "application/json"}
    if authorization:
        headers["authorization"] = authorization
    conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
    r = conn.getresponse()
    body = r.read().decode("utf-8", "replace")
    json.dump({"status": r.status, "headers": [[k.lower(), v] for k, v in r.getheaders()], "body": body},
              sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "certs":
        certs(sys.argv[2])
    else:
        request(*sys.argv[2:])
