//! Reads a generated Disqus export of a given size and reports throughput and peak memory:
//! the reading half of the import benchmark.
//!
//!   cargo run --release -p io360-import --example disqus-read -- 1024   # MiB of export

use std::io::Write;
use std::time::Instant;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args().nth(1).map_or(Ok(256), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("disqus.xml");
    // About 40 KiB per thread of 100 posts.
    let threads = (mib * 1024 / 40).max(1) as usize;
    let began = Instant::now();
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        io360_import::generate::disqus(&mut w, threads, 100)?;
        w.flush()?;
    }
    let size = std::fs::metadata(&path)?.len();
    eprintln!(
        "wrote {:.0} MiB in {:.1} s",
        size as f64 / 1048576.0,
        began.elapsed().as_secs_f64()
    );
    let before = peak_rss_kib();
    let began = Instant::now();
    let (mut threads_read, mut comments) = (0u64, 0u64);
    for r in io360_import::read_path(io360_import::Format::Disqus, &path)? {
        match r? {
            io360_import::Record::Thread(_) => threads_read += 1,
            io360_import::Record::Comment(_) => comments += 1,
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{{\"mib\":{:.0},\"threads\":{threads_read},\"comments\":{comments},\"seconds\":{secs:.2},\"mib_per_s\":{:.1},\"comments_per_s\":{:.0},\"peak_rss_mib\":{:.1},\"peak_rss_before_mib\":{:.1}}}",
        size as f64 / 1048576.0,
        size as f64 / 1048576.0 / secs,
        comments as f64 / secs,
        peak_rss_kib() as f64 / 1024.0,
        before as f64 / 1024.0
    );
    Ok(())
}
