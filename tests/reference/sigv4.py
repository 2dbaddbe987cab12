"""botocore's SigV4Auth as the reference signer (tests/envoy/sigv4.rs).

stdin: a JSON list of requests; stdout: for each, botocore's payload hash
and Authorization value. A request names its query either on the wire
(`path` with `?...`, signed from the URL as botocore does when it sends a
URL it did not build) or as decoded `params` (botocore encodes them).
"""
import datetime
import json
import sys
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def sign(case):
    when = datetime.datetime.fromtimestamp(case["time"], datetime.timezone.utc).replace(tzinfo=None)
    creds = Credentials(case["access_key_id"], case["secret_access_key"], case.get("session_token"))
    body = case["body"].encode("utf-8")
    request = AWSRequest(
        method=case["method"],
        url="http://" + case["host"] + case["path"],
        data=body,
        params=[tuple(p) for p in case.get("params", [])],
    )
    for name, value in case.get("headers", []):
        request.headers[name] = value
    auth = botocore.auth.SigV4Auth(creds, case["service"], case["region"])
    payload = auth.payload(request)
    request.headers["X-Amz-Content-SHA256"] = payload
    canonical = []
    original = auth.canonical_request

    def recorded(req):
        canonical.append(original(req))
        return canonical[-1]

    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when), \
            mock.patch.object(auth, "canonical_request", side_effect=recorded):
        auth.add_auth(request)
    return {
        "payload_sha256": payload,
        "authorization": request.headers["Authorization"],
        "x_amz_date": request.headers["X-Amz-Date"],
        "canonical_request": canonical[0],
    }


if __name__ == "__main__":
    print(json.dumps([sign(c) for c in json.load(sys.stdin)]))
