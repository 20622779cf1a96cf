//! Reading a Server-Sent Events stream off a raw HTTP/1.1 connection, a few bytes at a time.
//!
//! The load client reads sockets itself (to get the kernel's arrival stamps), so it cannot hand
//! the stream to an HTTP library: [`EventStream`] takes whatever bytes arrived, undoes chunked
//! transfer coding when the answer uses it, and yields each complete SSE message. It is the
//! same for io360's `/v1/events` and for any other server's SSE endpoint.

use anyhow::{Result, bail};

/// One Server-Sent Events message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// The `id` field, if the message had one.
    pub id: Option<String>,
    /// The `event` field, if the message had one.
    pub event: Option<String>,
    /// The `data` lines, joined by `\n`.
    pub data: String,
}

#[derive(Debug)]
enum Body {
    /// The head is not complete yet.
    Head,
    /// Chunked: the bytes left in the current chunk (`None`: a size line comes next).
    Chunked(Option<usize>),
    /// Everything until the connection closes is the body.
    Plain,
}

/// An SSE answer being read: feed it bytes with [`EventStream::push`], take messages with
/// [`EventStream::next_message`].
#[derive(Debug)]
pub struct EventStream {
    raw: Vec<u8>,
    body: Body,
    text: Vec<u8>,
    status: u16,
}

impl Default for EventStream {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStream {
    /// A stream whose answer head has not arrived yet.
    pub fn new() -> Self {
        EventStream {
            raw: Vec::new(),
            body: Body::Head,
            text: Vec::new(),
            status: 0,
        }
    }

    /// The answer's status code (0 until the head arrived).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.raw.extend_from_slice(bytes);
        loop {
            match self.body {
                Body::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut res = httparse::Response::new(&mut headers);
                    let httparse::Status::Complete(len) = res.parse(&self.raw)? else {
                        return Ok(());
                    };
                    self.status = res.code.unwrap_or(0);
                    let chunked = res.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && String::from_utf8_lossy(h.value)
                                .to_ascii_lowercase()
                                .contains("chunked")
                    });
                    self.body = if chunked {
                        Body::Chunked(None)
                    } else {
                        Body::Plain
                    };
                    self.raw.drain(..len);
                }
                Body::Plain => {
                    self.text.append(&mut self.raw);
                    return Ok(());
                }
                Body::Chunked(None) => {
                    let Some(end) = find(&self.raw, b"\r\n") else {
                        return Ok(());
                    };
                    let line = std::str::from_utf8(&self.raw[..end])?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let Ok(size) = usize::from_str_radix(size, 16) else {
                        bail!("a chunk size line {line:?} is not hexadecimal");
                    };
                    if size == 0 {
                        bail!("the stream ended (last chunk)");
                    }
                    self.raw.drain(..end + 2);
                    self.body = Body::Chunked(Some(size));
                }
                Body::Chunked(Some(left)) => {
                    // The chunk's data, then its CRLF.
                    if left > 0 {
                        let take = left.min(self.raw.len());
                        self.text.extend(self.raw.drain(..take));
                        self.body = Body::Chunked(Some(left - take));
                        if take < left {
                            return Ok(());
                        }
                    }
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    if &self.raw[..2] != b"\r\n" {
                        bail!("a chunk does not end with CRLF");
                    }
                    self.raw.drain(..2);
                    self.body = Body::Chunked(None);
                }
            }
        }
    }

    /// The next complete message, if one has arrived. Comment lines (keep-alive pings) and
    /// messages without data are skipped.
    pub fn next_message(&mut self) -> Option<SseMessage> {
        loop {
            let (end, sep) = match (find(&self.text, b"\n\n"), find(&self.text, b"\r\n\r\n")) {
                (Some(a), Some(b)) if b < a => (b, 4),
                (Some(a), _) => (a, 2),
                (None, Some(b)) => (b, 4),
                (None, None) => return None,
            };
            let block: Vec<u8> = self.text.drain(..end + sep).collect();
            let mut msg = SseMessage::default();
            let mut has_data = false;
            for line in String::from_utf8_lossy(&block[..end]).lines() {
                let (field, value) = match line.split_once(':') {
                    Some(("", _)) => continue,
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "data" => {
                        if has_data {
                            msg.data.push('\n');
                        }
                        msg.data.push_str(value);
                        has_data = true;
                    }
                    "id" => msg.id = Some(value.to_owned()),
                    "event" => msg.event = Some(value.to_owned()),
                    _ => {}
                }
            }
            if has_data {
                return Some(msg);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::{EventStream, SseMessage};

    fn all(s: &mut EventStream) -> Vec<SseMessage> {
        std::iter::from_fn(|| s.next_message()).collect()
    }

    #[test]
    fn chunked_messages_split_anywhere_come_out_whole() {
        let body = ": ping\n\nid: 7\ndata: {\"a\":1}\n\nid: 8\nevent: x\ndata: one\ndata: two\n\n";
        // Two chunks whose boundary falls inside the second message.
        let (a, b) = body.split_at(30);
        let wire = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n",
            a.len(),
            b.len()
        );
        // Fed one byte at a time: nothing depends on how reads fall.
        let mut s = EventStream::new();
        let mut got = Vec::new();
        for byte in wire.as_bytes() {
            s.push(std::slice::from_ref(byte)).unwrap();
            got.extend(all(&mut s));
        }
        assert_eq!(s.status(), 200);
        assert_eq!(
            got,
            vec![
                SseMessage {
                    id: Some("7".into()),
                    event: None,
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    id: Some("8".into()),
                    event: Some("x".into()),
                    data: "one\ntwo".into()
                },
            ]
        );
    }

    #[test]
    fn a_plain_body_and_crlf_separators_work_too() {
        let mut s = EventStream::new();
        s.push(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\r\n\r\ndata: y\n\n",
        )
        .unwrap();
        let got: Vec<String> = all(&mut s).into_iter().map(|m| m.data).collect();
        assert_eq!(got, ["x", "y"]);
    }

    #[test]
    fn the_last_chunk_and_a_bad_size_are_errors() {
        let mut s = EventStream::new();
        s.push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        assert!(s.push(b"0\r\n\r\n").is_err());
        let mut s = EventStream::new();
        s.push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        assert!(s.push(b"zz\r\n").is_err());
    }
}
