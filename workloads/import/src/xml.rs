//! Streaming XML for the Disqus and WordPress readers: the file is read event by event, and
//! only one record's element (a Disqus `<post>`, a WordPress `<wp:comment>`) is held at a
//! time, as a small tree. The line being read is counted, so errors can name it.

use std::io::BufRead;

use quick_xml::events::Event;

/// Most text one element may hold: a record larger than this is refused, not buffered.
const MAX_ELEMENT_BYTES: usize = 16 << 20;

/// A `BufRead` that counts the lines the parser has consumed.
pub struct Lines<R> {
    inner: R,
    newlines: u64,
}

impl<R: BufRead> std::io::Read for Lines<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Lines<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let amt = amt.min(buf.len());
            self.newlines += buf[..amt].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        self.inner.consume(amt);
    }
}

/// One element with its text and children; names are local (`wp:comment_id` is
/// `comment_id`).
#[derive(Debug, Default, Clone)]
pub struct Element {
    /// The local name.
    pub name: String,
    /// Attributes, by local name.
    pub attrs: Vec<(String, String)>,
    /// The element's own text (CDATA included, entities resolved).
    pub text: String,
    /// Child elements in order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child named `name`, trimmed (`""` if absent).
    pub fn text_of(&self, name: &str) -> &str {
        self.child(name).map_or("", |c| c.text.trim())
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An XML file read element by element.
pub struct Stream<R: BufRead> {
    reader: quick_xml::Reader<Lines<R>>,
    buf: Vec<u8>,
    /// Elements open now.
    pub depth: usize,
}

/// A start tag the stream stopped at.
pub struct Start {
    /// The element, without text or children yet.
    pub element: Element,
    /// How many elements enclose it (the root is at 0).
    pub depth: usize,
    /// `<x/>`: nothing to collect.
    pub empty: bool,
}

fn local(name: &[u8]) -> String {
    let name = match name.iter().position(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    String::from_utf8_lossy(name).into_owned()
}

impl<R: BufRead> Stream<R> {
    /// A stream over `input`.
    pub fn new(input: R) -> Self {
        let mut reader = quick_xml::Reader::from_reader(Lines {
            inner: input,
            newlines: 0,
        });
        reader.config_mut().check_end_names = true;
        Stream {
            reader,
            buf: Vec::new(),
            depth: 0,
        }
    }

    /// The line being read (1-based).
    pub fn line(&self) -> u64 {
        self.reader.get_ref().newlines + 1
    }

    fn start_of(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| format!("a malformed attribute ({e})"))?;
            let v = a
                .unescape_value()
                .map_err(|e| format!("a malformed attribute value ({e})"))?;
            attrs.push((local(a.key.as_ref()), v.into_owned()));
        }
        Ok(Element {
            name: local(e.name().as_ref()),
            attrs,
            ..Element::default()
        })
    }

    /// Advances to the next start tag; `None` at the end of the file.
    pub fn next_start(&mut self) -> Result<Option<Start>, String> {
        loop {
            self.buf.clear();
            let ev = self
                .reader
                .read_event_into(&mut self.buf)
                .map_err(|e| format!("malformed XML ({e})"))?;
            match ev {
                Event::Start(e) => {
                    let element = Self::start_of(&e)?;
                    let depth = self.depth;
                    self.depth += 1;
                    return Ok(Some(Start {
                        element,
                        depth,
                        empty: false,
                    }));
                }
                Event::Empty(e) => {
                    let element = Self::start_of(&e)?;
                    return Ok(Some(Start {
                        element,
                        depth: self.depth,
                        empty: true,
                    }));
                }
                Event::End(_) => self.depth = self.depth.saturating_sub(1),
                Event::Eof => {
                    if self.depth > 0 {
                        return Err(format!(
                            "the file ends inside an element ({} left open): it is truncated",
                            self.depth
                        ));
                    }
                    return Ok(None);
                }
                _ => {}
            }
        }
    }

    /// Reads the rest of the element `start` opened (text and children), up to its end tag.
    pub fn collect(&mut self, start: Start) -> Result<Element, String> {
        let mut stack = vec![start.element];
        if start.empty {
            return Ok(stack.pop().unwrap_or_default());
        }
        let mut size = 0usize;
        loop {
            self.buf.clear();
            let ev = self
                .reader
                .read_event_into(&mut self.buf)
                .map_err(|e| format!("malformed XML ({e})"))?;
            let top = stack.len() - 1;
            match ev {
                Event::Start(e) => {
                    self.depth += 1;
                    stack.push(Self::start_of(&e)?);
                }
                Event::Empty(e) => {
                    let child = Self::start_of(&e)?;
                    stack[top].children.push(child);
                }
                Event::Text(t) => {
                    let s = t
                        .decode()
                        .map_err(|e| format!("text that is not UTF-8 ({e})"))?;
                    size += s.len();
                    stack[top].text.push_str(&s);
                }
                Event::CData(c) => {
                    let s = c
                        .decode()
                        .map_err(|e| format!("CDATA that is not UTF-8 ({e})"))?;
                    size += s.len();
                    stack[top].text.push_str(&s);
                }
                Event::GeneralRef(r) => {
                    let name = r
                        .decode()
                        .map_err(|e| format!("an entity that is not UTF-8 ({e})"))?;
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_owned(),
                            // An entity XML does not define (`&nbsp;` outside CDATA): kept as
                            // written, for the sanitizer to read as HTML.
                            None => format!("&{name};"),
                        },
                        Err(e) => return Err(format!("a malformed character reference ({e})")),
                    };
                    stack[top].text.push_str(&resolved);
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    let done = stack.pop().unwrap_or_default();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(done),
                    }
                }
                Event::Eof => {
                    return Err("the file ends inside an element: it is truncated".into());
                }
                _ => {}
            }
            if size > MAX_ELEMENT_BYTES {
                return Err(format!(
                    "one element holds more than {} MiB of text",
                    MAX_ELEMENT_BYTES >> 20
                ));
            }
        }
    }
}
