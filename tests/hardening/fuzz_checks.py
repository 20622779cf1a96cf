"""Checks schemathesis runs on every answer of io360's API (loaded by fuzz-api.sh).

Every 4xx is an RFC 9457 problem: `application/problem+json` with `type`, `title` and the
same `status` as the answer. (No 5xx is schemathesis' own `not_a_server_error`.)
"""

import ast
import json
import threading

import schemathesis

# CPython 3.11 keeps the AST constructor's recursion depth per interpreter, not per thread, so
# two threads parsing at once can fail with "SystemError: AST constructor recursion depth
# mismatch". Hypothesis parses a lambda's source to describe the strategy it filters, from
# both of schemathesis' workers; one such failure stopped a whole run with a runtime error
# after every generated case had passed. Parsing is serialized here.
_parse = ast.parse
_parsing = threading.Lock()


def _parse_one_at_a_time(*args, **kwargs):
    with _parsing:
        return _parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time


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
