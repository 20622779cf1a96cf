//! Atom feeds of a thread's newest comments.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;
use io360_common::Problem;
use io360_common::extract::Query;
use io360_common::html::escape;
use io360_common::model::Status;

use crate::api::{Client, ThreadQuery, check_thread};
use crate::state::AppState;

/// Entries in one feed.
const ENTRIES: usize = 50;

pub async fn feed(
    State(s): State<AppState>,
    client: Client,
    Query(q): Query<ThreadQuery>,
) -> Result<Response, Problem> {
    s.reads.check(client.0)?;
    check_thread(&q.thread)?;
    let cached = s.cache.thread(&s.store, &q.thread).await?;
    let mut comments: Vec<_> = cached
        .page
        .comments
        .iter()
        .filter(|c| c.status == Status::Approved)
        .collect();
    comments.sort_by_key(|c| std::cmp::Reverse(c.id));
    comments.truncate(ENTRIES);
    let base = s.config.public_url.trim_end_matches('/');
    let link = format!(
        "{base}{}",
        if q.thread.starts_with('/') {
            q.thread.clone()
        } else {
            format!("/{}", q.thread)
        }
    );
    let updated = comments
        .iter()
        .map(|c| c.modified.clone().unwrap_or_else(|| c.created.clone()))
        .max()
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    xml.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    xml.push_str(&format!(
        "<id>{}</id>\n<title>Comments on {}</title>\n<updated>{}</updated>\n<link href=\"{}\"/>\n",
        escape(&format!("{link}#comments")),
        escape(&q.thread),
        escape(&updated),
        escape(&link)
    ));
    for c in comments {
        xml.push_str(&format!(
            "<entry>\n<id>{}</id>\n<title>{} wrote</title>\n<author><name>{}</name></author>\n<updated>{}</updated>\n<link href=\"{}\"/>\n<content type=\"html\">{}</content>\n</entry>\n",
            escape(&format!("{link}#io360-{}", c.id)),
            escape(c.author.as_deref().unwrap_or("Anonymous")),
            escape(c.author.as_deref().unwrap_or("Anonymous")),
            escape(c.modified.as_deref().unwrap_or(&c.created)),
            escape(&format!("{link}#io360-{}", c.id)),
            escape(&c.html),
        ));
    }
    xml.push_str("</feed>\n");
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        xml,
    )
        .into_response())
}
