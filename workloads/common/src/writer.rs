//! A single writer thread fed by a bounded queue: the shape of both of io360's on-disk
//! stores (the store's comments, the logger's events). One thread owns the database's write
//! side, so counters need no locks and writes can share an fsync; callers queue jobs and are
//! told at once when the queue is full rather than piling up memory behind a slow disk.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the writer is behind. Try again shortly.
    Full,
    /// The writer has stopped, or is stopping.
    Stopped,
}

/// A writer thread and the queue that feeds it. Dropping it closes the queue and waits for
/// the thread to finish what was queued.
#[derive(Debug)]
pub struct WriterThread<J> {
    jobs: Mutex<Option<SyncSender<J>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<J: Send + 'static> WriterThread<J> {
    /// Starts the thread `name` running `run` over a queue of at most `bound` jobs (at least
    /// one). `run` returns when the queue is closed and empty.
    pub fn spawn(
        name: &str,
        bound: usize,
        run: impl FnOnce(Receiver<J>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::sync_channel(bound.max(1));
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(rx))?;
        Ok(WriterThread {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: J) -> Result<(), Refused> {
        let jobs = self.jobs.lock().map_err(|_| Refused::Stopped)?;
        match jobs.as_ref().ok_or(Refused::Stopped)?.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Stopped),
        }
    }
}

impl<J> WriterThread<J> {
    /// Closes the queue and waits for the writer to finish what is queued.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

impl<J> Drop for WriterThread<J> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::{Refused, WriterThread};

    #[test]
    fn a_full_queue_refuses_and_close_waits_for_what_was_queued() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let w = WriterThread::spawn("test-writer", 2, move |rx| {
            gate_rx.recv().unwrap();
            for job in rx {
                done_tx.send(job).unwrap();
            }
        })
        .unwrap();
        // The writer waits at the gate, so the queue fills.
        assert_eq!(w.submit(1), Ok(()));
        assert_eq!(w.submit(2), Ok(()));
        assert_eq!(w.submit(3), Err(Refused::Full));
        gate_tx.send(()).unwrap();
        w.close();
        assert_eq!(done_rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(w.submit(4), Err(Refused::Stopped));
    }
}
