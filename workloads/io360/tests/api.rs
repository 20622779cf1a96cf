//! The public comment API over real HTTP on loopback, with store and logic as they run in
//! production (in this process, on their own ports).

mod common;

use common::{ADMIN, Stack, status_json};
use serde_json::{Value, json};

fn no_limits() -> Vec<&'static str> {
    vec!["--no-rate-limits"]
}

#[tokio::test]
async fn post_list_page_and_reply() {
    let s = Stack::start(&no_limits()).await;
    let (st, a) = s
        .post("/posts/hello", json!({"text": "First!", "author": "Ann"}))
        .await;
    assert_eq!(st, 201, "{a}");
    assert!(a["editToken"].as_str().unwrap().len() > 20);
    let a_id = a["comment"]["id"].as_u64().unwrap();
    assert_eq!(a["comment"]["seq"], 1);
    assert_eq!(a["comment"]["html"], "<p>First!</p>\n");
    assert_eq!(a["comment"]["status"], "approved");
    assert!(a["comment"].get("email").is_none());

    let (st, r) = s
        .post(
            "/posts/hello",
            json!({"text": "a *reply*", "parent": a_id, "email": "bo@example.org"}),
        )
        .await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["comment"]["parent"], a_id);
    assert!(
        r["comment"]["html"]
            .as_str()
            .unwrap()
            .contains("<em>reply</em>")
    );
    assert!(
        r.to_string().find("bo@example.org").is_none(),
        "email leaked: {r}"
    );

    for i in 0..8 {
        s.post(
            "/posts/hello",
            json!({"text": format!("comment number {i}")}),
        )
        .await;
    }
    let all = s.list("/posts/hello").await;
    assert_eq!(all["head"], 10);
    assert_eq!(all["comments"].as_array().unwrap().len(), 10);
    assert!(all.to_string().find("bo@example.org").is_none());

    // Paging by sequence number.
    let (_, p1) = s
        .get("/api/v1/comments?thread=/posts/hello&after=0&limit=4")
        .await;
    let p1 = p1["comments"].as_array().unwrap().clone();
    assert_eq!(p1.len(), 4);
    let last = p1[3]["seq"].as_u64().unwrap();
    let (_, p2) = s
        .get(&format!(
            "/api/v1/comments?thread=/posts/hello&after={last}&limit=100"
        ))
        .await;
    assert_eq!(p2["comments"].as_array().unwrap().len(), 6);
    assert_eq!(p2["comments"][0]["seq"], last + 1);

    // A parent from another thread is refused, naming the field.
    let (st, e) = s
        .post("/posts/other", json!({"text": "x", "parent": a_id}))
        .await;
    assert_eq!(st, 400);
    assert_eq!(e["field"], "parent");
    let (st, e) = s
        .post("/posts/hello", json!({"text": "x", "parent": 999_999}))
        .await;
    assert_eq!((st, e["field"].as_str()), (400, Some("parent")));

    // An unknown thread is simply empty.
    let empty = s.list("/nobody/here").await;
    assert_eq!(empty["head"], 0);
    assert_eq!(empty["comments"], json!([]));
}

#[tokio::test]
async fn edit_and_delete_need_the_token_and_the_window() {
    let s = Stack::start(&["--no-rate-limits", "--edit-window", "2"]).await;
    let (_, a) = s.post("/t", json!({"text": "original"})).await;
    let id = a["comment"]["id"].as_u64().unwrap();
    let token = a["editToken"].as_str().unwrap().to_owned();
    let url = s.url(&format!("/api/v1/comments/{id}"));

    let res = s
        .http
        .patch(&url)
        .json(&json!({"text": "changed"}))
        .send()
        .await
        .unwrap();
    let (st, e) = status_json(res).await;
    assert_eq!((st, e["field"].as_str()), (401, Some("Authorization")));

    let forged = token.replace(&token[token.len() - 4..], "AAAA");
    let res = s
        .http
        .patch(&url)
        .bearer_auth(&forged)
        .json(&json!({"text": "changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_json(res).await.0, 403);

    // Another comment's token does not work either.
    let (_, b) = s.post("/t", json!({"text": "other"})).await;
    let other = b["editToken"].as_str().unwrap();
    let res = s
        .http
        .patch(&url)
        .bearer_auth(other)
        .json(&json!({"text": "changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_json(res).await.0, 403);

    let res = s
        .http
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({"text": "**changed**"}))
        .send()
        .await
        .unwrap();
    let (st, c) = status_json(res).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["comment"]["html"], "<p><strong>changed</strong></p>\n");
    assert!(c["comment"]["modified"].is_string());
    assert_eq!(s.list("/t").await["comments"][1]["text"], "**changed**");

    // The window closes.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let res = s
        .http
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (st, e) = status_json(res).await;
    assert_eq!(st, 403);
    assert!(
        e["type"].as_str().unwrap().ends_with("edit-window-closed"),
        "{e}"
    );
}

#[tokio::test]
async fn delete_leaves_a_tombstone_and_updates_counts() {
    let s = Stack::start(&no_limits()).await;
    let (_, a) = s
        .post("/d", json!({"text": "to go", "author": "Zed"}))
        .await;
    s.post("/d", json!({"text": "to stay"})).await;
    let id = a["comment"]["id"].as_u64().unwrap();
    let res = s
        .http
        .delete(s.url(&format!("/api/v1/comments/{id}")))
        .bearer_auth(a["editToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let (st, c) = status_json(res).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["comment"]["status"], "deleted");
    assert_eq!(c["comment"]["html"], "");
    assert_eq!(c["comment"]["author"], Value::Null);
    let res = s
        .http
        .post(s.url("/api/v1/counts"))
        .json(&json!({"threads": ["/d", "/none"]}))
        .send()
        .await
        .unwrap();
    let (_, counts) = status_json(res).await;
    assert_eq!(counts["counts"], json!({"/d": 1, "/none": 0}));
}

#[tokio::test]
async fn votes_count_once_per_voter() {
    let s = Stack::start(&[
        "--no-rate-limits",
        "--trusted-proxy-header",
        "x-forwarded-for",
    ])
    .await;
    let (_, a) = s.post("/v", json!({"text": "vote on me"})).await;
    let id = a["comment"]["id"].as_u64().unwrap();
    let vote = |ip: &'static str, value: i64| {
        s.http
            .post(s.url(&format!("/api/v1/comments/{id}/vote")))
            .header("x-forwarded-for", ip)
            .json(&json!({"value": value}))
            .send()
    };
    let (st, c) = status_json(vote("192.0.2.1", 1).await.unwrap()).await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["comment"]["votes"], json!({"up": 1, "down": 0}));
    let (st, e) = status_json(vote("192.0.2.1", -1).await.unwrap()).await;
    assert_eq!(st, 409, "{e}");
    let (_, c) = status_json(vote("198.51.100.2", -1).await.unwrap()).await;
    assert_eq!(c["comment"]["votes"], json!({"up": 1, "down": 1}));
    let (st, e) = status_json(vote("203.0.113.3", 5).await.unwrap()).await;
    assert_eq!((st, e["field"].as_str()), (400, Some("value")));
    // Another address of a network that voted is the same voter: a client holds a whole /24
    // (or /64).
    let (st, e) = status_json(vote("192.0.2.77", 1).await.unwrap()).await;
    assert_eq!(st, 409, "{e}");
    let (st, _) = status_json(vote("2001:db8:5:6::1", 1).await.unwrap()).await;
    assert_eq!(st, 200);
    let (st, e) = status_json(vote("2001:db8:5:6:ffff::2", 1).await.unwrap()).await;
    assert_eq!(st, 409, "{e}");
}

#[tokio::test]
async fn idempotent_retries_make_one_comment() {
    let s = Stack::start(&[
        "--no-rate-limits",
        "--trusted-proxy-header",
        "x-forwarded-for",
    ])
    .await;
    let send = |ip: &'static str, text: &'static str| {
        s.http
            .post(s.url("/api/v1/comments?thread=/idem"))
            .header("idempotency-key", "retry-1")
            .header("x-forwarded-for", ip)
            .json(&json!({"text": text}))
            .send()
    };
    let (st1, a) = status_json(send("192.0.2.1", "only once").await.unwrap()).await;
    let res = send("192.0.2.1", "only once").await.unwrap();
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    let (st2, b) = status_json(res).await;
    assert_eq!((st1, st2), (201, 201));
    assert_eq!(a["comment"]["id"], b["comment"]["id"]);
    assert_eq!(a["editToken"], b["editToken"]);

    // The same key with another body is a mistake, not a retry.
    let (st, e) = status_json(send("192.0.2.1", "something else").await.unwrap()).await;
    assert_eq!(
        (st, e["type"].as_str()),
        (
            422,
            Some("https://io360.dev/problems/idempotency-key-reused")
        ),
        "{e}"
    );
    assert_eq!(e["field"], "Idempotency-Key");

    // Another client that knows the key, even with the same body, gets its own comment and
    // never the first client's edit token.
    let res = send("198.51.100.7", "only once").await.unwrap();
    assert!(res.headers().get("idempotent-replayed").is_none());
    let (st, c) = status_json(res).await;
    assert_eq!(st, 201, "{c}");
    assert_ne!(c["comment"]["id"], a["comment"]["id"]);
    assert_ne!(c["editToken"], a["editToken"]);
    assert_eq!(
        s.list("/idem").await["comments"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn atom_feed_lists_comments() {
    let s = Stack::start(&no_limits()).await;
    s.post("/f", json!({"text": "feed <me>", "author": "A & B"}))
        .await;
    s.post("/f", json!({"text": "second", "author": "O'Brien"}))
        .await;
    let res = s
        .http
        .get(s.url("/api/v1/feed?thread=/f"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let xml = res.text().await.unwrap();
    assert!(xml.contains("<name>A &amp; B</name>"), "{xml}");
    assert!(
        xml.contains("feed &amp;lt;me&amp;gt;") || xml.contains("&lt;p&gt;feed"),
        "{xml}"
    );
    // The apostrophe is escaped as the page snapshot escapes it.
    assert!(xml.contains("<name>O&#39;Brien</name>"), "{xml}");
    assert_eq!(xml.matches("<entry>").count(), 2);
}

#[tokio::test]
async fn moderation_holds_comments_until_approved() {
    let s = Stack::start(&["--no-rate-limits", "--moderation", "first-time"]).await;
    let (st, a) = s
        .post(
            "/m",
            json!({"text": "first ever", "email": "new@example.org"}),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(a["comment"]["status"], "pending");
    assert_eq!(s.list("/m").await["comments"], json!([]));

    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ADMIN);
    let (st, _) = status_json(
        s.http
            .get(s.url("/api/v1/admin/queue"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = status_json(
        s.http
            .get(s.url("/api/v1/admin/queue"))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 403);
    let (st, q) = status_json(
        admin(s.http.get(s.url("/api/v1/admin/queue")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(q["comments"].as_array().unwrap().len(), 1);
    assert_eq!(q["comments"][0]["email"], "new@example.org");
    let id = a["comment"]["id"].as_u64().unwrap();
    let (st, c) = status_json(
        admin(
            s.http
                .post(s.url(&format!("/api/v1/admin/comments/{id}/approve"))),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(s.list("/m").await["comments"][0]["status"], "approved");
    // Known now: the next comment is published at once.
    let (_, b) = s
        .post("/m", json!({"text": "second", "email": "NEW@example.org"}))
        .await;
    assert_eq!(b["comment"]["status"], "approved");
    // An admin delete removes a comment.
    let bid = b["comment"]["id"].as_u64().unwrap();
    let (st, _) = status_json(
        admin(
            s.http
                .delete(s.url(&format!("/api/v1/admin/comments/{bid}"))),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    // Close and reopen.
    let (st, m) = status_json(
        admin(s.http.post(s.url("/api/v1/admin/threads/close?thread=/m")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, m["closed"].as_bool()), (200, Some(true)));
    let (st, e) = s
        .post("/m", json!({"text": "closed?", "email": "new@example.org"}))
        .await;
    assert_eq!(st, 403);
    assert!(e["type"].as_str().unwrap().ends_with("thread-closed"));
    admin(s.http.post(s.url("/api/v1/admin/threads/reopen?thread=/m")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.post(
            "/m",
            json!({"text": "open again", "email": "new@example.org"})
        )
        .await
        .0,
        201
    );
}

#[tokio::test]
async fn suspension_refuses_writes_and_keeps_reads() {
    let s = Stack::start(&no_limits()).await;
    s.post("/s", json!({"text": "before"})).await;
    let res = s
        .http
        .put(s.url("/api/v1/admin/suspension"))
        .bearer_auth(ADMIN)
        .json(&json!({"suspended": true, "reason": "traffic spike"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, status) = s.get("/api/v1/status").await;
    assert_eq!(status["suspended"], true);
    assert_eq!(status["reason"], "Manual");
    let res = s
        .http
        .post(s.url("/api/v1/comments?thread=/s"))
        .json(&json!({"text": "during"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let (_, e) = status_json(res).await;
    assert!(e["type"].as_str().unwrap().ends_with("comments-suspended"));
    assert_eq!(e["detail"], "traffic spike");
    assert_eq!(s.list("/s").await["comments"].as_array().unwrap().len(), 1);
    s.http
        .put(s.url("/api/v1/admin/suspension"))
        .bearer_auth(ADMIN)
        .json(&json!({"suspended": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(s.post("/s", json!({"text": "after"})).await.0, 201);
}

#[tokio::test]
async fn rate_limits_and_abuse_rules() {
    let s = Stack::start(&[
        "--writes-per-minute",
        "7",
        "--writes-burst",
        "7",
        "--max-links",
        "1",
        "--banned-words",
        "spamword,casino",
        "--max-text-bytes",
        "100",
    ])
    .await;
    let (st, e) = s
        .post("/r", json!({"text": "hi", "homepage": "http://bot"}))
        .await;
    assert_eq!((st, e["field"].as_str()), (422, Some("homepage")));
    let (st, e) = s.post("/r", json!({"text": "visit the CASINO now"})).await;
    assert_eq!((st, e["field"].as_str()), (422, Some("text")));
    let (st, e) = s
        .post("/r", json!({"text": "https://a.example https://b.example"}))
        .await;
    assert_eq!(st, 422, "{e}");
    let (st, e) = s.post("/r", json!({"text": "x".repeat(101)})).await;
    assert_eq!((st, e["field"].as_str()), (400, Some("text")));
    // Every attempt spends the client's budget, refused ones too (a bot that sends junk is
    // limited like any other): seven attempts pass the limit, the eighth gets 429.
    assert_eq!(s.post("/r", json!({"text": "one"})).await.0, 201);
    let (st, e) = s.post("/r", json!({"text": "one"})).await;
    assert_eq!(st, 409, "duplicate text: {e}");
    assert_eq!(s.post("/r", json!({"text": "two"})).await.0, 201);
    let res = s
        .http
        .post(s.url("/api/v1/comments?thread=/r"))
        .json(&json!({"text": "four"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let s = Stack::start(&[
        "--no-rate-limits",
        "--allowed-origins",
        "https://blog.example.org",
    ])
    .await;
    let pre = |origin: &str| {
        s.http
            .request(
                reqwest::Method::OPTIONS,
                s.url("/api/v1/comments?thread=/c"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = pre("https://blog.example.org").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://blog.example.org"
    );
    let no = pre("https://evil.example").await.unwrap();
    assert!(no.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn xss_payloads_render_harmless() {
    let s = Stack::start(&["--no-rate-limits", "--max-links", "100"]).await;
    let payloads = [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "<svg/onload=alert(1)>",
        "<body onload=alert(1)>",
        "<iframe src=javascript:alert(1)>",
        "<a href=\"javascript:alert(1)\">click</a>",
        "<a href=\"JaVaScRiPt:alert(1)\">click</a>",
        "<a href=\"jav&#x09;ascript:alert(1)\">click</a>",
        "[click](javascript:alert(1))",
        "[click](  javascript:alert(1))",
        "![x](javascript:alert(1))",
        "<details open ontoggle=alert(1)>",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        "<input autofocus onfocus=alert(1)>",
        "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">x</a>",
        "<object data=\"javascript:alert(1)\">",
        "<embed src=\"javascript:alert(1)\">",
        "<form action=\"javascript:alert(1)\"><button>x</button></form>",
        "<style>@import 'javascript:alert(1)';</style>",
        "<div style=\"background:url(javascript:alert(1))\">x</div>",
        "<scr<script>ipt>alert(1)</script>",
        "\"><script>alert(1)</script>",
        "<a href=\"vbscript:msgbox(1)\">x</a>",
        "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
        "<base href=\"javascript:alert(1)//\">",
        "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
        "<video><source onerror=\"alert(1)\">",
        "<a href=\"&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)\">x</a>",
    ];
    for (i, p) in payloads.iter().enumerate() {
        let (st, c) = s
            .post(
                "/xss",
                json!({"text": p, "author": format!("<b onmouseover=alert({i})>")}),
            )
            .await;
        assert_eq!(st, 201, "{p}: {c}");
    }
    let all = s.list("/xss").await;
    for c in all["comments"].as_array().unwrap() {
        let html = c["html"].as_str().unwrap().to_lowercase();
        for bad in [
            "<script",
            "javascript:",
            "vbscript:",
            "data:text",
            "<iframe",
            "<object",
            "<embed",
            "<style",
            "<meta",
            "<base",
            "<form",
            "<svg",
            "<math",
            "style=",
        ] {
            assert!(!html.contains(bad), "{bad} survived in {html}");
        }
        assert!(
            !regex_like_handler(&html),
            "event handler survived in {html}"
        );
    }
}

/// Whether an `on…=` attribute survived inside a tag.
fn regex_like_handler(html: &str) -> bool {
    let mut in_tag = false;
    let bytes = html.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'<' => in_tag = true,
            b'>' => in_tag = false,
            b'o' if in_tag
                && i > 0
                && bytes[i - 1].is_ascii_whitespace()
                && bytes.get(i + 1) == Some(&b'n') =>
            {
                let rest = &html[i..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                if rest[name.len()..].trim_start().starts_with('=') {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_the_field() {
    let s = Stack::start(&no_limits()).await;
    let (_, a) = s.post("/b", json!({"text": "target"})).await;
    let id = a["comment"]["id"].as_u64().unwrap();
    let long_thread = "t".repeat(513);
    struct Case {
        method: &'static str,
        path: String,
        body: Option<Vec<u8>>,
        content_type: &'static str,
        status: u16,
        field: Option<&'static str>,
        admin: bool,
    }
    let c = |method, path: &str, body: Option<&[u8]>, status, field| Case {
        method,
        path: path.to_owned(),
        body: body.map(|b| b.to_vec()),
        content_type: "application/json",
        status,
        field,
        admin: false,
    };
    // A comment without a name or email has no author to ban or erase.
    let (_, anon) = s.post("/b", json!({"text": "anonymous"})).await;
    let anon_token = anon["editToken"].as_str().unwrap().to_owned();
    let anon = anon["comment"]["id"].as_u64().unwrap();
    let huge = format!("{{\"text\": \"{}\"}}", "a".repeat(300 * 1024));
    let mut cases = vec![
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(b"{not json"),
            400,
            None,
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(b"[1,2]"),
            400,
            None,
        ),
        c("POST", "/api/v1/comments?thread=/b", Some(b""), 400, None),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": 5}"#),
            400,
            Some("text"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": "x", "parent": "one"}"#),
            400,
            Some("parent"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": "x", "parent": -1}"#),
            400,
            Some("parent"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": "x", "colour": "red"}"#),
            400,
            None,
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"author": "x"}"#),
            400,
            None,
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": "   "}"#),
            400,
            Some("text"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(b"{\"text\": \"\xff\xfe\"}"),
            400,
            None,
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": "x", "author": "a\u0000b"}"#),
            400,
            Some("author"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": "x", "website": "javascript:alert(1)"}"#),
            400,
            Some("website"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(br#"{"text": "x", "email": "not-an-email"}"#),
            400,
            Some("email"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=/b",
            Some(huge.as_bytes()),
            413,
            None,
        ),
        c(
            "POST",
            "/api/v1/comments",
            Some(br#"{"text": "x"}"#),
            400,
            Some("thread"),
        ),
        c(
            "POST",
            &format!("/api/v1/comments?thread={long_thread}"),
            Some(br#"{"text": "x"}"#),
            400,
            Some("thread"),
        ),
        c(
            "POST",
            "/api/v1/comments?thread=",
            Some(br#"{"text": "x"}"#),
            400,
            Some("thread"),
        ),
        c("GET", "/api/v1/comments", None, 400, Some("thread")),
        c(
            "GET",
            "/api/v1/comments?thread=/b&after=-3",
            None,
            400,
            Some("after"),
        ),
        c(
            "GET",
            "/api/v1/comments?thread=/b&after=99999999999999999999999",
            None,
            400,
            Some("after"),
        ),
        c(
            "GET",
            "/api/v1/comments?thread=/b&limit=0",
            None,
            400,
            Some("limit"),
        ),
        c(
            "GET",
            "/api/v1/comments?thread=/b&limit=abc",
            None,
            400,
            Some("limit"),
        ),
        c(
            "PATCH",
            &format!("/api/v1/comments/{id}"),
            Some(br#"{"text": "x"}"#),
            401,
            Some("Authorization"),
        ),
        c(
            "PATCH",
            "/api/v1/comments/abc",
            Some(br#"{"text": "x"}"#),
            400,
            Some("id"),
        ),
        c(
            "DELETE",
            &format!("/api/v1/comments/{id}"),
            None,
            401,
            Some("Authorization"),
        ),
        c(
            "POST",
            "/api/v1/comments/999999/vote",
            Some(br#"{"value": 1}"#),
            404,
            None,
        ),
        c(
            "POST",
            &format!("/api/v1/comments/{id}/vote"),
            Some(br#"{"value": "up"}"#),
            400,
            Some("value"),
        ),
        c(
            "POST",
            "/api/v1/counts",
            Some(br#"{"threads": "a"}"#),
            400,
            Some("threads"),
        ),
        c(
            "POST",
            "/api/v1/counts",
            Some(br#"{"threads": ["ok", ""]}"#),
            400,
            Some("threads[1]"),
        ),
        c(
            "GET",
            "/api/v1/admin/queue",
            None,
            401,
            Some("Authorization"),
        ),
        c(
            "PUT",
            "/api/v1/admin/suspension",
            Some(br#"{"suspended": "yes"}"#),
            401,
            Some("Authorization"),
        ),
        c("GET", "/api/v1/feed", None, 400, Some("thread")),
        c("GET", "/api/v1/nope", None, 404, None),
    ];
    let mut wrong_type = c(
        "POST",
        "/api/v1/comments?thread=/b",
        Some(br#"{"text": "x"}"#),
        415,
        Some("Content-Type"),
    );
    wrong_type.content_type = "text/plain";
    cases.push(wrong_type);
    let ban_anon = format!(r#"{{"comment": {anon}}}"#);
    let erase_anon = format!(r#"{{"editToken": "{anon_token}"}}"#);
    for (path, body, field) in [
        ("/api/v1/admin/bans", ban_anon, "comment"),
        ("/api/v1/admin/authors/erase", erase_anon, "editToken"),
    ] {
        let mut case = c("POST", path, Some(body.as_bytes()), 422, Some(field));
        case.admin = true;
        cases.push(case);
    }
    for case in cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut req = s.http.request(method, s.url(&case.path));
        if let Some(b) = case.body {
            req = req.header("content-type", case.content_type).body(b);
        }
        if case.admin {
            req = req.bearer_auth(ADMIN);
        }
        let res = req.send().await.unwrap();
        let ct = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let (st, body) = status_json(res).await;
        assert_eq!(st, case.status, "{} {}: {body}", case.method, case.path);
        assert_eq!(
            ct.as_deref(),
            Some("application/problem+json"),
            "{} {}",
            case.method,
            case.path
        );
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        // Titles and details are one sentence each, as a person would write it.
        for text in [&body["title"], &body["detail"]] {
            let text = text.as_str().unwrap_or_default();
            assert!(
                !text.contains("  ") && !text.contains('\n'),
                "{} {}: a run of spaces or a line break in {text:?}",
                case.method,
                case.path
            );
        }
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .starts_with("https://io360.dev/problems/")
        );
        if let Some(f) = case.field {
            assert_eq!(body["field"], f, "{} {}: {body}", case.method, case.path);
        }
    }
    // The tiers are still alive and well.
    assert_eq!(s.post("/b", json!({"text": "still here"})).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_longer_than_one_answer_pages_to_its_newest_comment() {
    use futures::StreamExt;
    let s = Stack::start(&no_limits()).await;
    let n = 5_500u64;
    let posted: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let s = &s;
            async move {
                s.post("/big", json!({"text": format!("comment {i}")}))
                    .await
                    .0
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(posted.iter().all(|&st| st == 201));

    // The newest comments, by sequence number.
    let (st, tail) = s
        .get(&format!("/api/v1/comments?thread=/big&after={}", n - 10))
        .await;
    assert_eq!(st, 200, "{tail}");
    assert_eq!(tail["head"], n);
    let seqs: Vec<u64> = tail["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (n - 9..=n).collect::<Vec<_>>());

    // Paging from the start finds every comment once.
    let mut after = 0;
    let mut seen = 0;
    loop {
        let (_, p) = s
            .get(&format!("/api/v1/comments?thread=/big&after={after}"))
            .await;
        let page = p["comments"].as_array().unwrap();
        if page.is_empty() {
            break;
        }
        seen += page.len();
        after = page.last().unwrap()["seq"].as_u64().unwrap();
    }
    assert_eq!(seen as u64, n);

    // A new comment shows up at the end, read from the cache brought up to date.
    let (_, c) = s.post("/big", json!({"text": "one more"})).await;
    let (_, tail) = s
        .get(&format!("/api/v1/comments?thread=/big&after={n}"))
        .await;
    assert_eq!(tail["comments"][0]["id"], c["comment"]["id"]);
    assert_eq!(tail["head"], n + 1);
}

#[tokio::test]
async fn one_network_shares_one_write_budget() {
    let s = Stack::start(&[
        "--writes-per-minute",
        "5",
        "--writes-burst",
        "5",
        "--trusted-proxy-header",
        "x-forwarded-for",
    ])
    .await;
    let mut created = 0;
    for i in 1..=100 {
        let res = s
            .http
            .post(s.url("/api/v1/comments?thread=/one-net"))
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .json(&json!({"text": format!("from address {i}")}))
            .send()
            .await
            .unwrap();
        if res.status() == 201 {
            created += 1;
        } else {
            assert_eq!(res.status(), 429);
        }
    }
    assert_eq!(created, 5, "a /24 gets one budget, not one per address");
    // Another network still writes.
    let res = s
        .http
        .post(s.url("/api/v1/comments?thread=/one-net"))
        .header("x-forwarded-for", "198.51.100.9")
        .json(&json!({"text": "from elsewhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}
