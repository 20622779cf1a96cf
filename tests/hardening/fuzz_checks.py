"""Checks schemathesis runs on every answer of io360's API (loaded by fuzz-api.sh).

Every 4xx is an RFC 9457 problem: `application/problem+json` with `type`, `title` and the
same `status` as the answer. (No 5xx is schemathesis' own `not_a_server_error`.)
"""

import json

import schemathesis


@schemathesis.check
def problem_bodies(ctx, response, case):
    if not 400 <= response.status_code < 500:
        return None
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if not ctype.startswith("application/problem+json"):
        raise AssertionError(f"a {response.status_code} without a problem body ({ctype!r})")
    body = json.loads(response.content)
    for field in ("type", "title", "status"):
        if field not in body:
            raise AssertionError(f"a problem without `{field}`: {body}")
    if body["status"] != response.status_code:
        raise AssertionError(f"problem status {body['status']} on a {response.status_code}")
    return None
