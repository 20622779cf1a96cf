#!/usr/bin/env python3
"""Writes docs/openapi.json, the OpenAPI document of io360's public API.

The document is kept in the repository and served by logic at /api/v1/openapi.json; the
test `workloads/io360/tests/openapi.rs` checks it against the routes `io360 up` answers.
Edit this file, then run: tests/hardening/openapi.py > docs/openapi.json
"""
import json
P = {"$ref": "#/components/responses/Problem"}
def problems(*codes):
    return {str(c): P for c in codes}
thread_q = {"name": "thread", "in": "query", "required": True, "description": "The thread: any string of 1 to 512 bytes, UTF-8 in normalization form C, without control or direction-override characters (usually the page path).", "schema": {"type": "string", "minLength": 1, "maxLength": 512}}
id_p = {"name": "id", "in": "path", "required": True, "description": "A comment id.", "schema": {"type": "integer", "format": "int64", "minimum": 1}}
bearer_edit = [{"editToken": []}]
admin = [{"adminToken": []}]
def json_body(schema_ref, required=True):
    return {"required": required, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}
def ok(schema_ref, code="200", desc="OK"):
    return {code: {"description": desc, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}}
def obj_ok(code="200", desc="OK"):
    return {code: {"description": desc, "content": {"application/json": {"schema": {"type": "object"}}}}}

paths = {
  "/api/v1/comments": {
    "get": {"operationId": "listComments", "summary": "A thread's comments after a sequence number, in order", "tags": ["comments"],
      "parameters": [thread_q,
        {"name": "after", "in": "query", "description": "Sequence number: only comments whose last change is after it.", "schema": {"type": "integer", "format": "int64", "minimum": 0, "default": 0}},
        {"name": "limit", "in": "query", "description": "Most comments in the answer.", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}}],
      "responses": {**ok("#/components/schemas/ThreadPage"), **problems(400, 429, 503)}},
    "post": {"operationId": "postComment", "summary": "Post a comment", "tags": ["comments"],
      "parameters": [thread_q,
        {"name": "Idempotency-Key", "in": "header", "description": "Makes retries safe: the same client sending the same body with the same key within a day gets the first answer (`Idempotent-Replayed: true`); another body with a used key is a 422.", "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
      "requestBody": json_body("#/components/schemas/NewComment"),
      "responses": {**ok("#/components/schemas/Posted", "201", "Posted (or replayed)"), **problems(400, 403, 409, 413, 415, 422, 429, 503)}},
  },
  "/api/v1/comments/{id}": {
    "patch": {"operationId": "editComment", "summary": "Edit one's own comment inside the edit window", "tags": ["comments"], "security": bearer_edit,
      "parameters": [id_p], "requestBody": json_body("#/components/schemas/Edit"),
      "responses": {**ok("#/components/schemas/One"), **problems(400, 401, 403, 404, 410, 413, 415, 422, 429, 503)}},
    "delete": {"operationId": "deleteComment", "summary": "Delete one's own comment inside the edit window", "tags": ["comments"], "security": bearer_edit,
      "parameters": [id_p],
      "responses": {**ok("#/components/schemas/One"), **problems(400, 401, 403, 404, 410, 429, 503)}},
  },
  "/api/v1/comments/{id}/vote": {
    "post": {"operationId": "vote", "summary": "Vote on a comment, once per network", "tags": ["comments"],
      "parameters": [id_p], "requestBody": json_body("#/components/schemas/Vote"),
      "responses": {**ok("#/components/schemas/One"), **problems(400, 404, 409, 413, 415, 429, 503)}},
  },
  "/api/v1/counts": {
    "post": {"operationId": "counts", "summary": "Approved comment counts for many threads", "tags": ["comments"],
      "requestBody": json_body("#/components/schemas/CountsRequest"),
      "responses": {**ok("#/components/schemas/Counts"), **problems(400, 413, 415, 429, 503)}},
  },
  "/api/v1/feed": {
    "get": {"operationId": "feed", "summary": "A thread's newest comments as an Atom feed", "tags": ["comments"],
      "parameters": [thread_q],
      "responses": {"200": {"description": "Atom feed", "content": {"application/atom+xml": {"schema": {"type": "string"}}}}, **problems(400, 429, 503)}},
  },
  "/api/v1/preview": {
    "post": {"operationId": "preview", "summary": "Render Markdown as a comment would be rendered", "tags": ["comments"],
      "requestBody": json_body("#/components/schemas/Edit"),
      "responses": {**ok("#/components/schemas/Preview"), **problems(400, 413, 415, 422, 429)}},
  },
  "/api/v1/status": {
    "get": {"operationId": "status", "summary": "Whether comments are suspended, and why", "tags": ["comments"],
      "responses": ok("#/components/schemas/Status")},
  },
  "/api/v1/openapi.json": {
    "get": {"operationId": "openapi", "summary": "This document", "tags": ["meta"],
      "responses": {"200": {"description": "OpenAPI 3.0 document", "content": {"application/json": {"schema": {"type": "object"}}}}}},
  },
  "/v1/poll": {
    "get": {"operationId": "poll", "summary": "Long poll: every event after `since`, or wait for one", "tags": ["live"],
      "description": "`thread` and `since` may repeat (up to 100 threads); each `since` belongs to the `thread` before it.",
      "parameters": [thread_q, {"name": "since", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 9007199254740991, "default": 0}}],
      "responses": {"200": {"description": "Events", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Events"}}}},
                    "204": {"description": "Nothing happened within the hold time"}, **problems(400, 429, 503)}},
  },
  "/v1/events": {
    "get": {"operationId": "events", "summary": "One thread's events as Server-Sent Events", "tags": ["live"],
      "parameters": [thread_q, {"name": "since", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 9007199254740991}},
        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
      "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **problems(400, 429, 503)}},
  },
}
adm = {
  "/api/v1/admin/queue": {"get": ("adminQueue", "Comments held for moderation, oldest first", [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}], None)},
  "/api/v1/admin/comments/{id}/approve": {"post": ("adminApprove", "Approve a held comment", [id_p], None)},
  "/api/v1/admin/comments/{id}/reject": {"post": ("adminReject", "Reject a held comment", [id_p], None)},
  "/api/v1/admin/comments/{id}": {"delete": ("adminDelete", "Delete any comment", [id_p], None)},
  "/api/v1/admin/comments": {"get": ("adminSearch", "Search comments, newest first", [
      {"name": "thread", "in": "query", "schema": {"type": "string"}}, {"name": "author", "in": "query", "schema": {"type": "string"}},
      {"name": "text", "in": "query", "schema": {"type": "string"}}, {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["approved", "pending", "deleted"]}},
      {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}], None)},
  "/api/v1/admin/threads/close": {"post": ("adminClose", "Close a thread to new comments", [thread_q], None)},
  "/api/v1/admin/threads/reopen": {"post": ("adminReopen", "Reopen a thread", [thread_q], None)},
  "/api/v1/admin/suspension": {"get": ("adminSuspension", "The manual suspension", [], None),
                               "put": ("adminSuspend", "Suspend or resume comments (where no operator decides)", [], "#/components/schemas/Suspend")},
  "/api/v1/admin/bans": {"get": ("adminBans", "Banned authors and address ranges", [], None),
                         "post": ("adminBan", "Ban an author (by comment or email) or an address range", [], "#/components/schemas/Ban"),
                         "delete": ("adminUnban", "Lift a ban", [{"name": "author", "in": "query", "schema": {"type": "string"}}, {"name": "range", "in": "query", "schema": {"type": "string"}}], None)},
  "/api/v1/admin/events": {"get": ("adminEvents", "The audit trail, filtered as the logger's events API is (kind, thread, comment, tier, limit, ...)", [{"name": "kind", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}], None)},
  "/api/v1/admin/authors/erase": {"post": ("adminErase", "Erase an author's personal data", [], "#/components/schemas/Author")},
  "/api/v1/admin/authors/export": {"post": ("adminExport", "Export an author's personal data", [], "#/components/schemas/Author")},
}
for path, ops in adm.items():
    paths[path] = {}
    for m, (op, summary, params, body) in ops.items():
        o = {"operationId": op, "summary": summary, "tags": ["admin"], "security": admin, "parameters": params,
             "responses": {**obj_ok(), **problems(400, 401, 403, 404, 409, 413, 415, 503)}}
        if body:
            o["requestBody"] = json_body(body)
        paths[path][m] = o

nullable_str = {"type": "string", "nullable": True}
schemas = {
  "Problem": {"type": "object", "description": "RFC 9457 problem: every error io360 answers.", "required": ["type", "title", "status"],
    "properties": {"type": {"type": "string", "description": "https://io360.dev/problems/<slug>; the slug is stable"}, "title": {"type": "string"},
      "status": {"type": "integer"}, "detail": {"type": "string"}, "field": {"type": "string", "description": "The request field at fault"}, "retryAfter": {"type": "integer"}}},
  "Comment": {"type": "object", "required": ["id", "thread", "seq", "parent", "author", "html", "created", "status", "votes"],
    "properties": {"id": {"type": "integer", "format": "int64"}, "thread": {"type": "string"}, "seq": {"type": "integer", "format": "int64"},
      "parent": {"type": "integer", "format": "int64", "nullable": True}, "author": nullable_str, "website": nullable_str, "text": {"type": "string"},
      "html": {"type": "string", "description": "Sanitized HTML rendered at write time"}, "created": {"type": "string", "format": "date-time"},
      "modified": {"type": "string", "format": "date-time", "nullable": True}, "status": {"type": "string", "enum": ["approved", "pending", "deleted"]},
      "votes": {"type": "object", "properties": {"up": {"type": "integer"}, "down": {"type": "integer"}}}}},
  "ThreadPage": {"type": "object", "required": ["thread", "head", "comments"], "properties": {"thread": {"type": "string"}, "head": {"type": "integer", "format": "int64"},
      "closed": {"type": "boolean"}, "comments": {"type": "array", "items": {"$ref": "#/components/schemas/Comment"}}}},
  "NewComment": {"type": "object", "required": ["text"], "additionalProperties": False,
    "properties": {"text": {"type": "string", "description": "Markdown, up to IO360_MAX_TEXT_BYTES (20,000) bytes"}, "author": {"type": "string", "maxLength": 100},
      "email": {"type": "string", "maxLength": 254}, "website": {"type": "string", "maxLength": 500}, "parent": {"type": "integer", "format": "int64", "minimum": 0},
      "title": {"type": "string", "maxLength": 300}, "homepage": {"type": "string", "description": "Leave empty: a field only bots fill in"}}},
  "Posted": {"type": "object", "required": ["comment", "editToken", "editableUntil"], "properties": {"comment": {"$ref": "#/components/schemas/Comment"},
      "editToken": {"type": "string", "description": "Send as `Authorization: Bearer <editToken>` to edit or delete within the window"}, "editableUntil": {"type": "string", "format": "date-time"}}},
  "One": {"type": "object", "required": ["comment"], "properties": {"comment": {"$ref": "#/components/schemas/Comment"}}},
  "Edit": {"type": "object", "required": ["text"], "additionalProperties": False, "properties": {"text": {"type": "string"}}},
  "Vote": {"type": "object", "required": ["value"], "additionalProperties": False, "properties": {"value": {"type": "integer", "enum": [1, -1]}}},
  "CountsRequest": {"type": "object", "required": ["threads"], "additionalProperties": False, "properties": {"threads": {"type": "array", "maxItems": 1000, "items": {"type": "string", "minLength": 1, "maxLength": 512}}}},
  "Counts": {"type": "object", "required": ["counts"], "properties": {"counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
  "Preview": {"type": "object", "required": ["html"], "properties": {"html": {"type": "string"}}},
  "Status": {"type": "object", "required": ["suspended"], "properties": {"suspended": {"type": "boolean"}, "reason": {"type": "string"}, "message": {"type": "string"}, "since": {"type": "string", "format": "date-time"}}},
  "Events": {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": {"type": "object", "required": ["thread", "seq", "kind"],
      "properties": {"thread": {"type": "string"}, "seq": {"type": "integer"}, "kind": {"type": "string"}, "comment": {"$ref": "#/components/schemas/Comment"}}}}}},
  "Suspend": {"type": "object", "required": ["suspended"], "additionalProperties": False, "properties": {"suspended": {"type": "boolean"}, "reason": {"type": "string"}}},
  "Ban": {"type": "object", "additionalProperties": False, "description": "One of: the author of a comment, the author using an email, or an address range (CIDR).", "properties": {"comment": {"type": "integer", "format": "int64"}, "email": {"type": "string"}, "range": {"type": "string"}}},
  "Author": {"type": "object", "additionalProperties": False, "description": "One of: the email they commented with, or the edit token of one of their comments.", "properties": {"email": {"type": "string"}, "editToken": {"type": "string"}}},
}
# Email notifications: every route answers 404 (notifications-off) on a site without a notify tier.
off = "404 when the site sends no email notifications (problem type notifications-off)."
schemas["Subscribe"] = {"type": "object", "required": ["email", "thread"], "additionalProperties": False, "properties": {
  "email": {"type": "string", "minLength": 3, "maxLength": 254, "description": "Where the emails go: one address, no spaces or line breaks. A confirmation is sent to it first; nothing else is sent until its link is followed."},
  "thread": thread_q["schema"] | {"description": thread_q["description"]},
  "comment": {"type": "integer", "format": "int64", "minimum": 1, "description": "Only replies to this comment; absent: every new comment in the thread."}}}
schemas["Subscription"] = {"type": "object", "required": ["status", "thread"], "properties": {
  "status": {"type": "string", "enum": ["pending", "confirmed", "unsubscribed"]}, "thread": {"type": "string"}}}
paths["/api/v1/notifications/subscribe"] = {"post": {"operationId": "subscribe", "tags": ["notifications"],
  "summary": "Ask to be emailed about new comments in a thread, or replies to one comment (double opt-in)",
  "description": "Rate-limited like posting. At most 5 subscriptions of one address may wait for confirmation at once (429). " + off,
  "requestBody": json_body("#/components/schemas/Subscribe"),
  "responses": {**ok("#/components/schemas/Subscription", "202", "Accepted: a confirmation email is on its way (or the subscription was already confirmed)"), **problems(400, 404, 413, 415, 429, 503)}}}
token_q = {"name": "token", "in": "query", "required": True, "description": "The token of a link from a notification email.", "schema": {"type": "string", "minLength": 1, "maxLength": 2048}}
html_page = {"200": {"description": "A small HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}
for action, page_summary, act_summary in [
    ("confirm", "A page with a button that confirms a subscription (opening the link changes nothing)", "Confirm a subscription"),
    ("unsubscribe", "A page with a button that withdraws a subscription (opening the link changes nothing)", "Withdraw a subscription; also the one-click unsubscribe of RFC 8058 (List-Unsubscribe-Post)")]:
    paths[f"/api/v1/notifications/{action}"] = {
      "get": {"operationId": f"{action}Page", "summary": page_summary, "description": off, "tags": ["notifications"], "parameters": [token_q],
              "responses": {**html_page, **problems(400, 404, 429, 503)}},
      "post": {"operationId": action, "summary": act_summary, "tags": ["notifications"], "parameters": [token_q],
               "description": off + " An altered link answers 400 (invalid-link); an expired confirmation link 400 (expired-link).",
               "responses": {**html_page, **problems(400, 404, 429, 503)}}}

paths["/api/v1/notifications/moderate"] = {
  "get": {"operationId": "moderatePage", "summary": "A page with a button that uses a moderator's approve or delete link (opening the link changes nothing)", "description": off, "tags": ["notifications"], "parameters": [token_q],
          "responses": {**html_page, **problems(400, 404, 429, 503)}},
  "post": {"operationId": "moderate", "summary": "Approve or delete a held comment with a moderator's link from a notification email; each link works once and expires after 3 days", "tags": ["notifications"], "parameters": [token_q],
           "description": off + " A link used before answers 410 (link-used); an altered one 400 (invalid-link), an expired one 400 (expired-link).",
           "responses": {**html_page, **problems(400, 404, 410, 429, 503)}}}
schemas["NewComment"]["properties"]["notify"] = {"type": "string", "enum": ["replies", "thread"], "description": "Email me replies to this comment, or every new comment in the thread; needs `email`, and a confirmation goes there first. 400 on a site that sends no email."}

doc = {
  "openapi": "3.0.3",
  "info": {"title": "io360 comments API", "version": "1",
    "description": "The public comment API of io360 (`/api/v1`) and its live updates (`/v1`). Errors are `application/problem+json` (see the Problem schema) with a stable `type`; bad input is never a 5xx. Rate limits count per IPv4 /24 and IPv6 /64."},
  "paths": paths,
  "components": {"schemas": schemas,
    "responses": {"Problem": {"description": "A problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}},
    "securitySchemes": {"editToken": {"type": "http", "scheme": "bearer", "description": "The editToken a post answered"},
                        "adminToken": {"type": "http", "scheme": "bearer", "description": "IO360_ADMIN_TOKEN"}}},
}
print(json.dumps(doc, indent=2))
