"""A scripted envoy.service.auth.v3.Authorization/Check server (grpcio) for
the Envoy tests of the passthrough over gRPC.

    python authz_server.py <dir>

Compiles ext_authz.proto (next to this file) with grpcio-tools into <dir>,
listens on 127.0.0.1:<free port>, prints "PORT <n>" and serves until stdin
closes. Each call appends the CheckRequest as JSON (one line) to
<dir>/requests.jsonl, then answers as <dir>/script.json says, re-read on
every call (the test rewrites it):

    {"response": {...CheckResponse as JSON...}}    the reply (default: OK)
    {"delay_ms": 800, ...}                         wait first
    {"abort": {"code": 14, "details": "down"}}     end the call with that status
    {"raw_b64": "..."}                             reply with these bytes as they are
    {"rules": [{"if_header": ["x-user", "bob"], ...a script...}], ...}
        the first rule whose request header matches is the script
"""
import base64
import json
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc
from google.protobuf import json_format

here = os.path.dirname(os.path.abspath(__file__))
work = sys.argv[1]
import importlib.resources as resources

include = str(resources.files("grpc_tools") / "_proto")
rc = protoc.main(["protoc", f"-I{here}", f"-I{include}", f"--python_out={work}", "ext_authz.proto"])
if rc != 0:
    sys.exit(f"protoc failed: {rc}")
sys.path.insert(0, work)
import ext_authz_pb2 as pb  # noqa: E402

lock = threading.Lock()
script_path = os.path.join(work, "script.json")
requests_path = os.path.join(work, "requests.jsonl")


def load_script():
    try:
        with open(script_path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def check(raw, context):
    req = pb.CheckRequest.FromString(raw)
    as_json = json_format.MessageToDict(req, preserving_proto_field_name=True)
    meta = {k: v for k, v in context.invocation_metadata()}
    with lock:
        with open(requests_path, "a") as f:
            f.write(json.dumps({"request": as_json, "metadata": meta}) + "\n")
    script = load_script()
    headers = req.attributes.request.http.headers
    for rule in script.get("rules", []):
        name, value = rule["if_header"]
        if headers.get(name) == value:
            script = rule
            break
    if script.get("delay_ms"):
        time.sleep(script["delay_ms"] / 1000)
    if "abort" in script:
        context.abort(grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == script["abort"]["code"])),
                      script["abort"].get("details", ""))
    if "raw_b64" in script:
        return base64.b64decode(script["raw_b64"])
    resp = json_format.ParseDict(script.get("response", {}), pb.CheckResponse())
    return resp.SerializeToString()


handler = grpc.method_handlers_generic_handler(
    "envoy.service.auth.v3.Authorization",
    {"Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"PORT {port}", flush=True)
sys.stdin.read()
server.stop(0)
