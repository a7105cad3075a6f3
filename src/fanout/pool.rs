//! [`Pool`]: threads shared by the callbacks of many consumers.

use std::fmt;
use std::io;

use crossbeam_channel::{unbounded, Sender};

use crate::error::invalid_input;
use crate::sync::Arc;

/// A job: one callback call, which catches its own panics.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run the callbacks of consumers started with
/// [`Emit::run_on_pool`](crate::Emit::run_on_pool).
///
/// Many consumers may share one pool: it bounds how many callbacks run at once, however many
/// consumers there are. `Clone` shares the same threads; they exit when the last handle (and
/// the last consumer using them) is gone.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use sparsebuf::{Pool, StreamBuffer};
///
/// let pool = Pool::new(2)?;
/// let (mut writer, buf) = StreamBuffer::builder().build_push()?;
/// let consumers = (1..=3)
///     .map(|k| buf.emit(100 * k).run_on_pool(&pool).start(|chunk| Ok(chunk.len())))
///     .collect::<std::io::Result<Vec<_>>>()?;
/// writer.write_all(&[7u8; 1000])?;
/// writer.finish()?;
/// for consumer in consumers {
///     assert_eq!(consumer.join()?.bytes, 1000);
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Sender<Job>,
    threads: usize,
}

impl Pool {
    /// Starts `threads` threads.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) for 0 threads; the error of
    /// [`std::thread::Builder::spawn`] if a thread cannot be started (those already started
    /// then exit).
    pub fn new(threads: usize) -> io::Result<Pool> {
        if threads == 0 {
            return Err(invalid_input("a pool needs at least one thread"));
        }
        let (jobs, queue) = unbounded::<Job>();
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sparsebuf-pool-{i}"))
                .spawn(move || {
                    for job in queue {
                        job();
                    }
                })?;
        }
        Ok(Pool {
            inner: Arc::new(Inner { jobs, threads }),
        })
    }

    /// How many threads the pool has.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Queues `job` for the next free thread.
    pub(crate) fn run(&self, job: Job) -> io::Result<()> {
        self.inner
            .jobs
            .send(job)
            .map_err(|_| io::Error::other("the pool's threads are gone"))
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.inner.threads)
            .finish()
    }
}
