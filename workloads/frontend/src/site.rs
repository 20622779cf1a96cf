//! The site held in memory.
//!
//! Pages are served from memory so that no request waits on a disk, and so that every
//! representation a browser may ask for (plain, gzip, brotli) is prepared once, at load time,
//! not per request. A [`Site`] is immutable; a change on disk builds a new one that replaces
//! the old in one atomic swap (see `watch`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

use crate::marker;
use crate::page::Page;
use crate::snapshot::Snapshots;

/// Files larger than this are not loaded (and so not served).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Below this size compression saves too little to be worth a second representation.
const MIN_COMPRESS_BYTES: usize = 256;

/// Why a site could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The site directory could not be read.
    #[error(
        "cannot read the site directory {path}: {source}; check that it exists and is readable"
    )]
    Read {
        /// The directory or file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// One file as read from disk or from the binary.
pub(crate) struct RawFile {
    /// Path relative to the site root, `/`-separated, no leading slash.
    pub rel: String,
    pub body: Vec<u8>,
    pub modified: SystemTime,
}

/// One encoded form of a resource, with its entity tag.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub body: Bytes,
    pub etag: HeaderValue,
}

/// The content codings io360 serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    pub fn header(self) -> Option<HeaderValue> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some(HeaderValue::from_static("gzip")),
            Coding::Brotli => Some(HeaderValue::from_static("br")),
        }
    }
}

/// A resource with all its representations prepared.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub identity: Variant,
    pub gzip: Option<Variant>,
    pub br: Option<Variant>,
}

impl Encoded {
    /// Prepares `body`, compressing it when `compressible` and worth it. `gzip` and `br`, when
    /// given, are precompressed forms found next to the file and are used as they are.
    pub fn new(
        body: Bytes,
        compressible: bool,
        level: Level,
        gzip: Option<Vec<u8>>,
        br: Option<Vec<u8>>,
    ) -> Encoded {
        let hash = xxhash_rust::xxh3::xxh3_64(&body);
        let tag = |suffix: &str| {
            HeaderValue::from_str(&format!("\"{hash:016x}{suffix}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        };
        let worth = |c: &Vec<u8>| c.len() * 10 < body.len() * 9;
        let try_compress = compressible && body.len() >= MIN_COMPRESS_BYTES;
        let gzip = gzip
            .or_else(|| try_compress.then(|| gzip_bytes(&body, level)).flatten())
            .filter(worth)
            .map(|b| Variant {
                body: b.into(),
                etag: tag("-gz"),
            });
        let br = br
            .or_else(|| try_compress.then(|| brotli_bytes(&body, level)).flatten())
            .filter(worth)
            .map(|b| Variant {
                body: b.into(),
                etag: tag("-br"),
            });
        Encoded {
            identity: Variant {
                body,
                etag: tag(""),
            },
            gzip,
            br,
        }
    }

    /// The best representation for a request's `Accept-Encoding`.
    pub fn pick(&self, accept: Accept) -> (&Variant, Coding) {
        if accept.br
            && let Some(v) = &self.br
        {
            return (v, Coding::Brotli);
        }
        if accept.gzip
            && let Some(v) = &self.gzip
        {
            return (v, Coding::Gzip);
        }
        (&self.identity, Coding::Identity)
    }
}

/// How hard to compress: files are compressed once per load (spend time), assembled pages once
/// per snapshot change (spend less).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    Load,
    Assembly,
}

fn gzip_bytes(body: &[u8], level: Level) -> Option<Vec<u8>> {
    let lvl = match level {
        Level::Load => 9,
        Level::Assembly => 6,
    };
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::new(lvl),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

fn brotli_bytes(body: &[u8], level: Level) -> Option<Vec<u8>> {
    let quality = match level {
        Level::Load if body.len() <= 1024 * 1024 => 11,
        Level::Load => 9,
        Level::Assembly => 5,
    };
    let mut out = Vec::with_capacity(body.len() / 3);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 16 * 1024, quality, 22);
        w.write_all(body).ok()?;
        w.flush().ok()?;
    }
    Some(out)
}

/// Which codings a request accepts (`q=0` excluded).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Accept {
    pub gzip: bool,
    pub br: bool,
}

impl Accept {
    /// Parses an `Accept-Encoding` header value.
    pub fn parse(value: Option<&HeaderValue>) -> Accept {
        let mut accept = Accept::default();
        let Some(s) = value.and_then(|v| v.to_str().ok()) else {
            return accept;
        };
        for item in s.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                accept.gzip = true;
            } else if coding.eq_ignore_ascii_case("br") {
                accept.br = true;
            } else if coding == "*" {
                accept.gzip = true;
                accept.br = true;
            }
        }
        accept
    }
}

/// Headers every representation of a file shares, prepared at load time.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub content_type: HeaderValue,
    pub cache_control: HeaderValue,
    pub modified: SystemTime,
    pub last_modified: HeaderValue,
}

impl Meta {
    fn new(rel: &str, modified: SystemTime, asset_max_age: u64) -> Meta {
        let (ct, _) = content_type(rel);
        // Pages change whenever their comments do, so browsers revalidate them every time
        // (a cheap 304); other files may be reused for a while.
        let cache = if is_html(rel) {
            HeaderValue::from_static("no-cache")
        } else {
            HeaderValue::from_str(&format!("public, max-age={asset_max_age}"))
                .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
        };
        Meta::with(HeaderValue::from_static(ct), cache, modified)
    }

    pub fn with(
        content_type: HeaderValue,
        cache_control: HeaderValue,
        modified: SystemTime,
    ) -> Meta {
        // HTTP dates have whole seconds; comparisons must use the same precision.
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let modified = UNIX_EPOCH + Duration::from_secs(secs);
        let last_modified = HeaderValue::from_str(&httpdate::fmt_http_date(modified))
            .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        Meta {
            content_type,
            cache_control,
            modified,
            last_modified,
        }
    }
}

/// A static file: its headers and representations.
#[derive(Debug)]
pub(crate) struct Asset {
    pub meta: Meta,
    pub encoded: Encoded,
}

/// Gzip and brotli forms of a file found next to it (`x.gz`, `x.br`).
type Precompressed = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What a path in the site resolves to.
pub(crate) enum Entry {
    /// A file served as it is.
    Asset(Asset),
    /// An HTML page with a comment thread marked in it.
    Page(Page),
}

/// The whole site, immutable once built.
pub(crate) struct Site {
    files: HashMap<String, Arc<Entry>>,
    dirs: HashSet<String>,
    /// Number of files loaded.
    pub len: usize,
}

/// The answer to "what is at this path?".
pub(crate) enum Lookup {
    /// The entry to serve.
    Found(Arc<Entry>),
    /// A directory asked for without its trailing slash: redirect to `path/`.
    Redirect,
    /// Nothing; the site's own 404 page when it has one.
    NotFound(Option<Arc<Entry>>),
}

impl Site {
    /// An empty site (before the first load).
    pub fn empty() -> Site {
        Site {
            files: HashMap::new(),
            dirs: HashSet::new(),
            len: 0,
        }
    }

    /// Builds a site from raw files; pages with a marked thread get a snapshot slot.
    pub fn build(raw: Vec<RawFile>, snapshots: &Snapshots, asset_max_age: u64) -> Site {
        let mut by_path: HashMap<String, RawFile> =
            raw.into_iter().map(|f| (f.rel.clone(), f)).collect();
        let names: Vec<String> = by_path.keys().cloned().collect();
        let mut precompressed: HashMap<String, Precompressed> = HashMap::new();
        for name in &names {
            for (ext, is_gz) in [(".gz", true), (".br", false)] {
                if let Some(base) = name.strip_suffix(ext)
                    && by_path.contains_key(base)
                    && let Some(f) = by_path.get(name)
                {
                    let slot = precompressed.entry(base.to_owned()).or_default();
                    if is_gz {
                        slot.0 = Some(f.body.clone());
                    } else {
                        slot.1 = Some(f.body.clone());
                    }
                }
            }
        }
        let mut files = HashMap::with_capacity(by_path.len());
        let mut dirs = HashSet::new();
        for (rel, f) in by_path.drain() {
            let mut dir = rel.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                dirs.insert(parent.to_owned());
                dir = parent;
            }
            let meta = Meta::new(&rel, f.modified, asset_max_age);
            let entry = if is_html(&rel)
                && let Some(m) = marker::find(&f.body)
            {
                let thread = m.thread.unwrap_or_else(|| url_path_of(&rel));
                Entry::Page(Page::new(
                    meta,
                    f.body,
                    m.insert_at,
                    snapshots.slot(&thread),
                ))
            } else {
                let (gz, br) = precompressed.remove(&rel).unwrap_or_default();
                let (_, compressible) = content_type(&rel);
                Entry::Asset(Asset {
                    meta,
                    encoded: Encoded::new(f.body.into(), compressible, Level::Load, gz, br),
                })
            };
            files.insert(rel, Arc::new(entry));
        }
        let len = files.len();
        Site { files, dirs, len }
    }

    /// Resolves a decoded, checked request path (see [`clean_path`]).
    pub fn lookup(&self, path: &CleanPath) -> Lookup {
        let key = path.key.as_str();
        if path.dir {
            let index = if key.is_empty() {
                "index.html".to_owned()
            } else {
                format!("{key}/index.html")
            };
            if let Some(e) = self.files.get(&index) {
                return Lookup::Found(e.clone());
            }
        } else {
            if let Some(e) = self.files.get(key) {
                return Lookup::Found(e.clone());
            }
            if self.dirs.contains(key) && self.files.contains_key(&format!("{key}/index.html")) {
                return Lookup::Redirect;
            }
            if let Some(e) = self.files.get(&format!("{key}.html")) {
                return Lookup::Found(e.clone());
            }
        }
        Lookup::NotFound(self.files.get("404.html").cloned())
    }

    /// Every page with a marked thread (to warm their snapshots).
    pub fn pages(&self) -> impl Iterator<Item = &Page> {
        self.files.values().filter_map(|e| match e.as_ref() {
            Entry::Page(p) => Some(p),
            Entry::Asset(_) => None,
        })
    }
}

/// The URL path a file is served at, used as the thread name when a page names none.
fn url_path_of(rel: &str) -> String {
    if rel == "index.html" {
        "/".to_owned()
    } else if let Some(dir) = rel.strip_suffix("/index.html") {
        format!("/{dir}/")
    } else {
        format!("/{rel}")
    }
}

/// A request path, percent-decoded and checked never to leave the site.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CleanPath {
    /// Segments joined by `/`, no leading or trailing slash.
    pub key: String,
    /// Whether the path ended with `/` (or was the root).
    pub dir: bool,
}

/// Why a request path was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathRefused {
    /// A `..` segment, a backslash, a NUL or invalid UTF-8: an attempt to leave the site.
    Escapes,
    /// A hidden file (`.git`, `.env`): never served.
    Hidden,
}

/// Decodes and checks a request path.
pub(crate) fn clean_path(raw: &str) -> Result<CleanPath, PathRefused> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathRefused::Escapes)?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return Err(PathRefused::Escapes);
    }
    let dir = decoded.ends_with('/') || decoded.is_empty();
    let mut segs = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(PathRefused::Escapes),
            s if s.starts_with('.') && s != ".well-known" => return Err(PathRefused::Hidden),
            s => segs.push(s),
        }
    }
    Ok(CleanPath {
        key: segs.join("/"),
        dir: dir || segs.is_empty(),
    })
}

/// Whether a file is an HTML page.
pub(crate) fn is_html(rel: &str) -> bool {
    let lower = rel.to_ascii_lowercase();
    lower.ends_with(".html") || lower.ends_with(".htm")
}

/// The content type for a file name, and whether compressing it pays.
pub(crate) fn content_type(rel: &str) -> (&'static str, bool) {
    let ext = rel
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => ("text/html; charset=utf-8", true),
        "css" => ("text/css; charset=utf-8", true),
        "js" | "mjs" => ("text/javascript; charset=utf-8", true),
        "json" | "map" => ("application/json", true),
        "webmanifest" => ("application/manifest+json", true),
        "xml" => ("application/xml", true),
        "atom" => ("application/atom+xml", true),
        "rss" => ("application/rss+xml", true),
        "svg" => ("image/svg+xml", true),
        "txt" => ("text/plain; charset=utf-8", true),
        "md" => ("text/markdown; charset=utf-8", true),
        "csv" => ("text/csv; charset=utf-8", true),
        "wasm" => ("application/wasm", true),
        "ico" => ("image/x-icon", true),
        "ttf" => ("font/ttf", true),
        "otf" => ("font/otf", true),
        "eot" => ("application/vnd.ms-fontobject", true),
        "woff" => ("font/woff", false),
        "woff2" => ("font/woff2", false),
        "png" => ("image/png", false),
        "jpg" | "jpeg" => ("image/jpeg", false),
        "gif" => ("image/gif", false),
        "webp" => ("image/webp", false),
        "avif" => ("image/avif", false),
        "pdf" => ("application/pdf", false),
        "mp4" => ("video/mp4", false),
        "webm" => ("video/webm", false),
        "mp3" => ("audio/mpeg", false),
        "ogg" => ("audio/ogg", false),
        "wav" => ("audio/wav", false),
        "gz" => ("application/gzip", false),
        "br" => ("application/octet-stream", false),
        _ => ("application/octet-stream", false),
    }
}

/// Reads every file under `root` (hidden files and files reached through links that leave
/// `root` are skipped). Blocking: call from a blocking thread.
pub(crate) fn read_dir(root: &Path) -> Result<Vec<RawFile>, LoadError> {
    let canon_root = root.canonicalize().map_err(|source| LoadError::Read {
        path: root.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    let mut stack = vec![canon_root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| LoadError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name != ".well-known" {
                continue;
            }
            let Ok(path) = entry.path().canonicalize() else {
                continue;
            };
            if !path.starts_with(&canon_root) {
                tracing::warn!(path = %entry.path().display(), "skipping a link that leaves the site directory");
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                // A link to a directory inside the root would be read twice; follow real
                // directories only.
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                }
                continue;
            }
            if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(&canon_root).map(|p| p.to_owned()) else {
                continue;
            };
            let Some(rel) = rel.to_str().map(|s| s.replace('\\', "/")) else {
                continue;
            };
            let body = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable file");
                    continue;
                }
            };
            out.push(RawFile {
                rel,
                body,
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean_path("/").unwrap(),
            CleanPath {
                key: String::new(),
                dir: true
            }
        );
        assert_eq!(clean_path("/a//b/./c.html").unwrap().key, "a/b/c.html");
        assert!(clean_path("/posts/").unwrap().dir);
        assert_eq!(clean_path("/%2e%2e/etc/passwd"), Err(PathRefused::Escapes));
        assert_eq!(clean_path("/a/../../x"), Err(PathRefused::Escapes));
        assert_eq!(clean_path("/a%5c..%5cx"), Err(PathRefused::Escapes));
        assert_eq!(clean_path("/a%00b"), Err(PathRefused::Escapes));
        assert_eq!(clean_path("/%ff"), Err(PathRefused::Escapes));
        assert_eq!(clean_path("/.git/config"), Err(PathRefused::Hidden));
        assert_eq!(clean_path("/caf%C3%A9.html").unwrap().key, "caf\u{e9}.html");
    }

    #[test]
    fn accept_encoding() {
        let a = Accept::parse(Some(&HeaderValue::from_static("gzip, deflate, br;q=0")));
        assert!(a.gzip && !a.br);
        let a = Accept::parse(Some(&HeaderValue::from_static("br;q=0.5, gzip;q=1")));
        assert!(a.gzip && a.br);
        let a = Accept::parse(None);
        assert!(!a.gzip && !a.br);
    }

    #[test]
    fn compression_only_when_it_pays() {
        let text = Bytes::from("hello io360 ".repeat(200));
        let e = Encoded::new(text.clone(), true, Level::Assembly, None, None);
        assert!(e.gzip.as_ref().is_some_and(|v| v.body.len() < text.len()));
        assert!(e.br.is_some());
        let tiny = Encoded::new(Bytes::from_static(b"hi"), true, Level::Load, None, None);
        assert!(tiny.gzip.is_none() && tiny.br.is_none());
        let (_, coding) = e.pick(Accept {
            gzip: true,
            br: true,
        });
        assert_eq!(coding, Coding::Brotli);
        assert_ne!(
            e.identity.etag,
            e.gzip.as_ref().map(|v| v.etag.clone()).unwrap()
        );
    }

    #[test]
    fn thread_name_defaults_to_url_path() {
        assert_eq!(url_path_of("index.html"), "/");
        assert_eq!(url_path_of("posts/hello/index.html"), "/posts/hello/");
        assert_eq!(url_path_of("about.html"), "/about.html");
    }
}
