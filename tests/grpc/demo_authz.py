"""The demo's auth service over gRPC: Envoy's
envoy.service.auth.v3.Authorization/Check (grpcio), with the same policy as
the HTTP one (tests/testkit/src/bin/demo-authz.rs):

    user `mallory`   denied: 403 with the service's own error body (suspended account)
    anyone else      OK, `x-user-plan: pro` for tenant acme, `free` otherwise

    python demo_authz.py <port> <work dir>

The identity is what the JWT stage verified: the x-user / x-tenant headers
of the check (set from the token's claims; a client cannot send them).
Compiles ext_authz.proto (next to this file) with grpcio-tools into
<work dir>; serves on 127.0.0.1:<port> until SIGTERM or SIGINT.
"""
import importlib.resources as resources
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc

here = os.path.dirname(os.path.abspath(__file__))
port, work = int(sys.argv[1]), sys.argv[2]
os.makedirs(work, exist_ok=True)
include = str(resources.files("grpc_tools") / "_proto")
if protoc.main(["protoc", f"-I{here}", f"-I{include}", f"--python_out={work}", "ext_authz.proto"]) != 0:
    sys.exit("demo_authz: protoc failed")
sys.path.insert(0, work)
import ext_authz_pb2 as pb  # noqa: E402

SUSPENDED = {"mallory"}


def check(raw, context):
    req = pb.CheckRequest.FromString(raw)
    http = req.attributes.request.http
    user = http.headers.get("x-user")
    resp = pb.CheckResponse()
    if user is None or user in SUSPENDED:
        message = f"the account of {user} is suspended" if user else "no verified user"
        if http.path.startswith("/v1/messages"):
            body = {"type": "error", "error": {"type": "permission_error", "message": message}}
        else:
            body = {"error": {"message": message, "type": "permission_error", "param": None, "code": "account_suspended"}}
        resp.status.code = 7  # PERMISSION_DENIED
        resp.denied_response.status.code = 403
        resp.denied_response.body = json.dumps(body)
        h = resp.denied_response.headers.add()
        h.header.key, h.header.value = "content-type", "application/json"
        return resp.SerializeToString()
    plan = "pro" if http.headers.get("x-tenant") == "acme" else "free"
    resp.status.code = 0
    h = resp.ok_response.headers.add()
    h.header.key, h.header.value = "x-user-plan", plan
    return resp.SerializeToString()


handler = grpc.method_handlers_generic_handler(
    "envoy.service.auth.v3.Authorization",
    {"Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
    sys.exit(f"demo_authz: cannot listen on 127.0.0.1:{port}")
server.start()
done = threading.Event()
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: done.set())
print(f"demo-authz (gRPC) on 127.0.0.1:{port}", file=sys.stderr, flush=True)
done.wait()
server.stop(0)
