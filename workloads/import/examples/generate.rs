//! Writes a synthetic export to stdout, for trying an import by hand and for the import
//! benchmark:
//!
//!   cargo run -p io360-import --example generate -- disqus THREADS PER_THREAD > disqus.xml

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: generate disqus|wordpress|remark42|commento THREADS PER_THREAD";
    let format = args.next().ok_or(usage)?;
    let threads: usize = args.next().ok_or(usage)?.parse()?;
    let per: usize = args.next().ok_or(usage)?.parse()?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    match format.as_str() {
        "disqus" => io360_import::generate::disqus(&mut w, threads, per)?,
        "wordpress" => io360_import::generate::wordpress(&mut w, threads, per)?,
        "remark42" => io360_import::generate::remark42(&mut w, threads, per)?,
        "commento" => io360_import::generate::commento(&mut w, threads, per)?,
        _ => return Err(usage.into()),
    }
    w.flush()?;
    Ok(())
}
