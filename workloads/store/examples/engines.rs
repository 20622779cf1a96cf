//! The store's two engines side by side on this machine: durable posts per second with many
//! concurrent writers, then thread reads per second, on fjall and on a PostgreSQL server of
//! its own (fsync on, as in production), through the same [`Engine`] API.
//!
//! `cargo run --release -p io360-store --example engines [posts] [writers]`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "a benchmark: a panic is its failure report"
)]

#[path = "../tests/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Instant;

use io360_common::model::Status;
use io360_store::api::{NewComment, WriteOp};
use io360_store::{Db, Engine, PgDb, PgOptions};

const THREADS: usize = 100;

fn append(i: usize) -> WriteOp {
    WriteOp::Append {
        thread: format!("/bench/{}", i % THREADS),
        comment: NewComment {
            parent: None,
            author: Some("reader".into()),
            email: None,
            website: None,
            text: format!("comment {i}, a sentence or two of a reader's words"),
            html: format!("<p>comment {i}, a sentence or two of a reader's words</p>"),
            status: Status::Approved,
            remote: None,
            author_key: Some(format!("author {}", i % 1000)),
        },
        idempotency: None,
    }
}

/// Posts per second and reads per second.
async fn run(db: Arc<Engine>, posts: usize, writers: usize) -> (f64, f64) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..posts).step_by(writers) {
                db.write(append(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let posted = posts as f64 / start.elapsed().as_secs_f64();
    let reads = posts;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in (r..reads).step_by(32) {
                let page = db
                    .page(format!("/bench/{}", (i * 7) % THREADS), 0, 100)
                    .await
                    .unwrap();
                assert!(!page.comments.is_empty());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (posted, reads as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: posts, writers"))
        .collect();
    let posts = args.first().copied().unwrap_or(20_000);
    let writers = args.get(1).copied().unwrap_or(256);

    let dir = tempfile::tempdir().unwrap();
    let fjall = Arc::new(Engine::Fjall(Db::open(dir.path(), 512).unwrap()));
    let (fp, fr) = run(fjall.clone(), posts, writers).await;
    fjall.close();

    let server = pg::Postgres::start_durable().await;
    let postgres = Arc::new(Engine::Postgres(
        PgDb::connect(PgOptions {
            url: server.url(),
            pool_max: 16,
            group_commit_max: 512,
            write_queue_max: io360_store::DEFAULT_WRITE_QUEUE,
        })
        .await
        .unwrap(),
    ));
    let (pp, pr) = run(postgres.clone(), posts, writers).await;
    postgres.close();

    println!(
        "{posts} posts by {writers} writers over {THREADS} threads, then {posts} reads of 100 comments by 32 readers"
    );
    println!("| engine | durable posts/s | thread reads/s |");
    println!("|---|---|---|");
    println!("| fjall | {fp:.0} | {fr:.0} |");
    println!("| PostgreSQL {} | {pp:.0} | {pr:.0} |", server.version());
    println!("| PostgreSQL ÷ fjall | {:.2}× | {:.2}× |", pp / fp, pr / fr);
}
