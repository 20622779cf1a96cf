//! `POST /api/v1/admin/import?from=FORMAT`: another comment system's export (or io360's own)
//! uploaded into a running site; `GET /api/v1/admin/import`: how the running (or the last)
//! import goes.
//!
//! The upload streams: chunks go from the connection over a short queue to a reader on a
//! blocking thread, which parses, renders and sorts them on disk with the loader `io360
//! import` uses, then writes the sorted comments to the store in batches
//! (`POST /store/v1/import`, idempotent on source ids). An Isso database, which SQLite reads
//! by path, is written to a scratch file first. The body is never held whole: memory is the
//! queue, one batch, and the sort's small cache.
//!
//! Everything is bounded: one import at a time (a second is answered 409), the upload's size
//! (`IO360_IMPORT_MAX_BYTES`, 413), a body that stalls ([`STALL`], 408), and the whole request
//! (`IO360_IMPORT_TIMEOUT_SECS`, in place of the API's usual request timeout). A file that
//! reads wrong is answered 400 with the place and the records read before it, and nothing of
//! it is written (the file is sorted whole before anything is written).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::State;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use io360_common::Problem;
use io360_common::client::ClientError;
use io360_common::extract::Query;
use io360_import::Format;
use io360_import::load::{LoadError, Summary};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::admin::Admin;
use crate::state::AppState;

/// How long an upload may go without a byte before it is given up.
pub const STALL: Duration = Duration::from_secs(60);

/// Chunks queued between the connection and the reader.
const QUEUE: usize = 16;

/// The most bytes read and dropped after the reader stopped at a bad record, so that the
/// client, still sending, reads the answer instead of a reset.
const DRAIN_MAX: u64 = 16 << 20;

/// The import slot and what the running (or last) import has done.
pub struct Imports {
    slot: Arc<Semaphore>,
    last: Mutex<Option<Progress>>,
}

impl Imports {
    /// One import at a time.
    pub fn new() -> Self {
        Imports {
            slot: Arc::new(Semaphore::new(1)),
            last: Mutex::new(None),
        }
    }

    fn set(&self, update: impl FnOnce(&mut Progress)) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = last.as_mut() {
            update(p);
        }
    }

    fn get(&self) -> Option<Progress> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An import as `GET /api/v1/admin/import` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The format named.
    format: &'static str,
    /// Who started it.
    actor: String,
    /// When it started, RFC 3339.
    started: String,
    /// Whether it is still going.
    running: bool,
    /// Bytes of the upload received so far.
    received: u64,
    /// The counts so far (at the end: the summary the upload was answered with).
    summary: Summary,
    /// Why it stopped, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The answer of `GET /api/v1/admin/import`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The running or last import since this logic process started; `null` when none.
    import: Option<Progress>,
}

/// `GET /api/v1/admin/import`.
pub async fn status(_: Admin, State(s): State<AppState>) -> axum::Json<Status> {
    axum::Json(Status {
        import: s.imports.get(),
    })
}

/// `?from=FORMAT`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    from: String,
}

fn too_large(max: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload-too-large",
        format!(
            "the upload is larger than the {max} bytes an import takes (IO360_IMPORT_MAX_BYTES)"
        ),
    )
}

fn stalled() -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "upload-stalled",
        format!(
            "no byte of the upload arrived for {} s; upload it again (comments already imported are skipped)",
            STALL.as_secs()
        ),
    )
}

fn unreadable() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "unreadable-body",
        "the upload could not be read to its end; upload it again (comments already imported are skipped)",
    )
}

/// The upload, chunk by chunk, within the size bound and the stall limit, counting bytes.
struct Upload {
    body: BodyDataStream,
    max: u64,
    received: Arc<AtomicU64>,
}

impl Upload {
    /// The next chunk; `None` at the end.
    async fn next(&mut self) -> Result<Option<Bytes>, Problem> {
        let chunk = match tokio::time::timeout(STALL, self.body.next()).await {
            Err(_) => return Err(stalled()),
            Ok(None) => return Ok(None),
            Ok(Some(Err(_))) => return Err(unreadable()),
            Ok(Some(Ok(c))) => c,
        };
        let total = self
            .received
            .fetch_add(chunk.len() as u64, Ordering::Relaxed)
            + chunk.len() as u64;
        if total > self.max {
            return Err(too_large(self.max));
        }
        Ok(Some(chunk))
    }
}

/// A blocking reader over the queue the upload is pushed into. An empty chunk is the end; a
/// queue closed without it is an upload cut short, read as an error, so a cut file is never
/// taken for a whole one.
struct Queued {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    chunk: Bytes,
    done: bool,
}

impl Read for Queued {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(c)) if c.is_empty() => self.done = true,
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(e),
                None => return Err(std::io::Error::other("the upload stopped before its end")),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Pushes the rest of the upload into the queue; once the reader has gone (it stopped at a
/// bad record), reads and drops a little more so the client reads the answer.
async fn pump(
    mut upload: Upload,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), Problem> {
    let mut reader_gone = false;
    let mut drained = 0u64;
    loop {
        let chunk = match upload.next().await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let _ = tx.send(Ok(Bytes::new())).await;
                return Ok(());
            }
            Err(p) => {
                let _ = tx.send(Err(std::io::Error::other(p.title.clone()))).await;
                return Err(p);
            }
        };
        if reader_gone {
            drained += chunk.len() as u64;
            if drained > DRAIN_MAX {
                return Ok(());
            }
        } else if tx.send(Ok(chunk)).await.is_err() {
            reader_gone = true;
        }
    }
}

/// Writes the upload into `file` (an Isso database, read by SQLite by path).
async fn spool(mut upload: Upload, head: Bytes, file: &std::path::Path) -> Result<(), Problem> {
    use tokio::io::AsyncWriteExt;
    let scratch = |e: std::io::Error| {
        Problem::internal(format!(
            "the import's scratch file {} cannot be written: {e}",
            file.display()
        ))
    };
    let mut out = tokio::fs::File::create(file).await.map_err(scratch)?;
    out.write_all(&head).await.map_err(scratch)?;
    while let Some(chunk) = upload.next().await? {
        out.write_all(&chunk).await.map_err(scratch)?;
    }
    out.flush().await.map_err(scratch)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `POST /api/v1/admin/import?from=FORMAT`: answers the import's [`Summary`].
pub async fn upload(
    admin: Admin,
    State(s): State<AppState>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Summary>, Problem> {
    let format: Format = q.from.parse().map_err(|e| Problem::invalid("from", e))?;
    let max = s.config.import_max_bytes;
    if declared_length(&headers).is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let slot = s.imports.slot.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::CONFLICT,
            "import-running",
            "an import is already running (one at a time); GET /api/v1/admin/import shows how it goes",
        )
    })?;
    let received = Arc::new(AtomicU64::new(0));
    let mut upload = Upload {
        body: body.into_data_stream(),
        max,
        received: received.clone(),
    };

    // The first bytes say whether the file is the format named, before anything is read.
    let mut head = Vec::with_capacity(io360_import::HEAD_BYTES);
    while head.len() < io360_import::HEAD_BYTES {
        match upload.next().await? {
            Some(c) => head.extend_from_slice(&c),
            None => break,
        }
    }
    if head.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "empty-upload",
            format!("the upload is empty; send the {format} export as the request body"),
        ));
    }
    let sniffed = &head[..head.len().min(io360_import::HEAD_BYTES)];
    io360_import::check_head(format, sniffed).map_err(|why| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "wrong-format",
            format!("the upload {why}"),
        )
        .with_field("from")
    })?;
    let head = Bytes::from(head);

    *s.imports.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Progress {
        format: format.name(),
        actor: admin.actor.clone(),
        started: io360_logger::event::now_rfc3339(),
        running: true,
        received: received.load(Ordering::Relaxed),
        summary: Summary::default(),
        error: None,
    });
    let scratch = s.config.import_scratch_dir();
    let result = if format == Format::Isso {
        let dir = tempdir(&scratch)?;
        let file = dir.path().join("comments.db");
        match spool(upload, head, &file).await {
            Err(p) => Err(p),
            Ok(()) => {
                let records = Box::new(move || {
                    io360_import::read_path(format, &file).map_err(|e| {
                        Problem::new(StatusCode::BAD_REQUEST, "import-invalid", e.to_string())
                    })
                });
                let r = load(&s, format, records, scratch, slot, &received).await;
                drop(dir);
                r
            }
        }
    } else {
        let (tx, rx) = mpsc::channel(QUEUE);
        // The head goes first; the queue is empty, so this does not wait.
        let _ = tx.try_send(Ok(head));
        let reader = Queued {
            rx,
            chunk: Bytes::new(),
            done: false,
        };
        // Made on the blocking thread: a reader may read as it is made (Commento's does).
        let records = Box::new(move || {
            Ok(io360_import::read(
                format,
                Box::new(std::io::BufReader::with_capacity(1 << 16, reader)),
            ))
        });
        let (pumped, loaded) = tokio::join!(
            pump(upload, tx),
            load(&s, format, records, scratch, slot, &received)
        );
        // A failed upload (too large, stalled, cut) explains the reader's failure.
        pumped.and(loaded)
    };
    let received = received.load(Ordering::Relaxed);
    let detail = match &result {
        Ok(summary) => {
            s.imports.set(|p| {
                p.running = false;
                p.received = received;
                p.summary = summary.clone();
            });
            format!(
                "{} bytes: {} threads, {} comments, {} imported, {} already imported, {} without their parent, {} threads closed",
                summary.bytes,
                summary.threads,
                summary.comments,
                summary.imported,
                summary.skipped,
                summary.orphans,
                summary.closed
            )
        }
        Err(problem) => {
            s.imports.set(|p| {
                p.running = false;
                p.received = received;
                p.error = Some(problem.title.clone());
            });
            format!("stopped after {received} bytes: {}", problem.title)
        }
    };
    s.audit.emit(
        crate::audit::event(io360_logger::Kind::SiteImported, &admin.actor)
            .reason(format.name())
            .detail(detail),
    );
    result.map(axum::Json)
}

fn tempdir(root: &std::path::Path) -> Result<tempfile::TempDir, Problem> {
    std::fs::create_dir_all(root)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix("io360-upload-")
                .tempdir_in(root)
        })
        .map_err(|e| {
            Problem::internal(format!(
                "the import's scratch directory {} cannot be used: {e}",
                root.display()
            ))
        })
}

/// Sorts and writes `records` on a blocking thread (the loader reads the upload with
/// blocking reads), keeping the progress shown by `GET /api/v1/admin/import` fresh. The slot
/// is held until the loader ends, even if the request is gone.
/// Makes the stream of records (on the loader's thread).
type MakeRecords = Box<dyn FnOnce() -> Result<io360_import::Records, Problem> + Send>;

async fn load(
    s: &AppState,
    format: Format,
    records: MakeRecords,
    scratch: PathBuf,
    slot: OwnedSemaphorePermit,
    received: &Arc<AtomicU64>,
) -> Result<Summary, Problem> {
    let state = s.clone();
    let received = received.clone();
    let runtime = tokio::runtime::Handle::current();
    let job = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let records = records()?;
        let keys = state.keys.clone();
        let author_key = move |email: &str| keys.author_of_email(email);
        let opts = io360_import::load::Options {
            format,
            render: &crate::render,
            author_key: &author_key,
            scratch: &scratch,
        };
        let bytes = || received.load(Ordering::Relaxed);
        let mut progress = |now: &Summary| {
            state.imports.set(|p| {
                p.received = bytes();
                p.summary = now.clone();
            });
        };
        runtime
            .block_on(io360_import::load::load(
                records,
                &state.store,
                &opts,
                &bytes,
                &mut progress,
            ))
            .map_err(problem)
    });
    job.await
        .map_err(|e| Problem::internal(format!("the import stopped: {e}")))?
}

fn problem(e: LoadError<ClientError>) -> Problem {
    match e {
        LoadError::Read { .. } | LoadError::Invalid { .. } => {
            Problem::new(StatusCode::BAD_REQUEST, "import-invalid", e.to_string())
        }
        LoadError::Store {
            source: ClientError::Problem(ref p),
            ..
        } if p.status < 500 => {
            Problem::new(StatusCode::BAD_REQUEST, "import-refused", e.to_string())
        }
        LoadError::Store { .. } => {
            Problem::unavailable("store-unavailable", e.to_string(), Duration::from_secs(5))
        }
        LoadError::Scratch(_) => Problem::internal(e.to_string()),
    }
}
