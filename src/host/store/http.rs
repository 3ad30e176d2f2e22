//! HTTP for template repositories (ureq): bounded small fetches, and image
//! downloads that resume where they stopped.
//!
//! Every request has a connect timeout and a per-read timeout (a server that
//! stops sending is noticed, however large the file), transient failures are
//! retried with back-off, and a retried download asks for the rest with a
//! `Range` request when the server offers it (else starts again).

use std::io::Read;
use std::time::Duration;

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request failed after its retries (connection, timeout, reset).
    #[error("cannot fetch {url} (after {attempts} attempts)")]
    Fetch {
        /// The URL fetched (a `repo.metadata`, a sidecar or an image).
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: ureq::Error,
    },
    /// The server answered with an error status.
    #[error("{url}: the server answered HTTP {status}")]
    Status {
        /// The URL fetched (a `repo.metadata`, a sidecar or an image).
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than allowed.
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL fetched (a `repo.metadata`, a sidecar or an image).
        url: String,
        /// The most bytes accepted from it.
        limit: u64,
    },
    /// The body ended before the length the server announced.
    #[error("{url}: the download stopped at {got} of {expected} bytes")]
    Truncated {
        /// The image URL being downloaded.
        url: String,
        /// Bytes received in all (resumed attempts included).
        got: u64,
        /// The whole size announced (`Content-Length`, plus what earlier attempts got).
        expected: u64,
    },
    /// The body could not be read or handed on (for downloads: written or decompressed).
    #[error("{url}: {what}")]
    Body {
        /// The image URL being downloaded.
        url: String,
        /// What failed (`cannot store the download`, …).
        what: String,
        /// The I/O error (reading the body, or writing or decompressing it).
        #[source]
        source: std::io::Error,
    },
}

/// Timeouts and retries of the client.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Connecting (DNS and TCP, TLS).
    pub connect: Duration,
    /// Each read: longer without a byte is a stalled server.
    pub per_read: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// The whole of one download, retries included (a server trickling bytes
    /// just fast enough never stalls); small files get 2 minutes.
    pub total: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect: Duration::from_secs(15),
            per_read: Duration::from_secs(60),
            attempts: 4,
            backoff: Duration::from_secs(1),
            total: Duration::from_secs(4 * 3600),
        }
    }
}

impl HttpOptions {
    /// Defaults, changed by `LAGO_DOWNLOAD_READ_TIMEOUT` (seconds without a
    /// byte before a download counts as stalled), `LAGO_DOWNLOAD_ATTEMPTS` and
    /// `LAGO_DOWNLOAD_TIMEOUT` (seconds for a whole download).
    pub fn from_env() -> Self {
        let mut o = HttpOptions::default();
        let num = |v: &str| std::env::var(v).ok().and_then(|s| s.trim().parse::<u64>().ok());
        if let Some(s) = num("LAGO_DOWNLOAD_READ_TIMEOUT").filter(|s| *s > 0) {
            o.per_read = Duration::from_secs(s);
        }
        if let Some(n) = num("LAGO_DOWNLOAD_ATTEMPTS").filter(|n| (1..=20).contains(n)) {
            o.attempts = n as u32;
        }
        if let Some(s) = num("LAGO_DOWNLOAD_TIMEOUT").filter(|s| *s > 0) {
            o.total = Duration::from_secs(s);
        }
        o
    }
}

/// An HTTP client for template repositories, with the timeouts and retries of its `HttpOptions`.
#[derive(Debug, Clone)]
pub struct Http {
    agent: ureq::Agent,
    opts: HttpOptions,
}

/// What a download did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes of the body.
    pub bytes: u64,
    /// Requests made beyond the first.
    pub retries: u32,
    /// Retries that went on where the previous attempt stopped.
    pub resumed: u32,
}

/// The whole of a small fetch (metadata, hashes).
const SMALL_TOTAL: Duration = Duration::from_secs(120);

/// Where a download goes: written as it comes, started again when the
/// server cannot resume, told of progress.
pub trait DownloadSink {
    /// The next bytes of the body.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Forget what was written: the body comes again from its first byte.
    fn restart(&mut self) -> std::io::Result<()>;
    /// Bytes received so far, of `total` when the server said.
    fn progress(&mut self, _done: u64, _total: Option<u64>) {}
}

/// Whether a failure is worth another attempt.
fn transient(e: &ureq::Error) -> bool {
    !matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::TooManyRedirects
            | ureq::Error::RequireHttpsOnly(_)
    )
}

impl Http {
    /// A client with these timeouts and retries.
    pub fn new(opts: HttpOptions) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect))
            .timeout_resolve(Some(opts.connect))
            .timeout_per_read(Some(opts.per_read))
            .timeout_recv_response(Some(opts.per_read))
            .user_agent(concat!("lago/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Http { agent, opts }
    }

    fn pause(&self, attempt: u32) {
        let wait = self.opts.backoff.saturating_mul(1 << attempt.min(6));
        std::thread::sleep(wait);
    }

    /// A small file (metadata, hashes) read whole, at most `limit` bytes;
    /// `None` when the server says it does not exist (404, 410).
    pub fn get_small(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, HttpError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = self
                .agent
                .get(url)
                .config()
                // An https repository is never redirected to plain http.
                .https_only(url.starts_with("https://"))
                .timeout_global(Some(SMALL_TOTAL.min(self.opts.total)))
                .build();
            let failure = match req.call() {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    if status == 404 || status == 410 {
                        return Ok(None);
                    }
                    if !(200..300).contains(&status) {
                        if status >= 500 && attempt < self.opts.attempts {
                            tracing::warn!(url, status, attempt, "server error; retrying");
                            self.pause(attempt - 1);
                            continue;
                        }
                        return Err(HttpError::Status {
                            url: url.to_owned(),
                            status,
                        });
                    }
                    match resp.body_mut().with_config().limit(limit).read_to_vec() {
                        Ok(b) => return Ok(Some(b)),
                        Err(ureq::Error::BodyExceedsLimit(_)) => {
                            return Err(HttpError::TooLarge {
                                url: url.to_owned(),
                                limit,
                            });
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if attempt >= self.opts.attempts || !transient(&failure) {
                return Err(HttpError::Fetch {
                    url: url.to_owned(),
                    attempts: attempt,
                    source: failure,
                });
            }
            tracing::warn!(url, attempt, error = %failure, "request failed; retrying");
            self.pause(attempt - 1);
        }
    }

    /// Streams the body of `url` into `sink`, at most `limit` bytes; a broken
    /// or stalled transfer is retried, from where it stopped when the server
    /// honours `Range` (else the sink restarts and it begins again). `None`
    /// when the file does not exist.
    pub fn download(&self, url: &str, limit: u64, sink: &mut dyn DownloadSink) -> Result<Option<Fetched>, HttpError> {
        let mut transfer = Transfer {
            url,
            limit,
            done: Fetched::default(),
            total: None,
        };
        let deadline = std::time::Instant::now() + self.opts.total;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.ranged_get(url, transfer.done.bytes, deadline).call() {
                Ok(resp) => match transfer.begin(resp.status().as_u16(), sink)? {
                    Begin::Missing => return Ok(None),
                    Begin::ServerError(status) if attempt < self.opts.attempts => {
                        tracing::warn!(url, status, attempt, "server error; retrying");
                        self.pause(attempt - 1);
                        continue;
                    }
                    Begin::ServerError(status) => {
                        return Err(HttpError::Status {
                            url: url.to_owned(),
                            status,
                        });
                    }
                    Begin::Body => match transfer.stream(resp, sink)? {
                        None => return Ok(Some(transfer.done)),
                        Some(failure) => failure,
                    },
                },
                Err(e) => e,
            };
            let out_of_time = std::time::Instant::now() >= deadline;
            if attempt >= self.opts.attempts || !transient(&failure) || out_of_time {
                return Err(transfer.give_up(failure, attempt));
            }
            transfer.done.retries += 1;
            tracing::warn!(url, attempt, at = transfer.done.bytes, error = %failure, "download interrupted; retrying");
            self.pause(attempt - 1);
        }
    }

    /// A GET of `url` from byte `from` on, bounded by what is left until
    /// `deadline`.
    fn ranged_get(
        &self,
        url: &str,
        from: u64,
        deadline: std::time::Instant,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut req = self.agent.get(url);
        if from > 0 {
            req = req.header("Range", &format!("bytes={from}-"));
        }
        req.config()
            // An https repository is never redirected to plain http.
            .https_only(url.starts_with("https://"))
            .timeout_global(Some(left.max(Duration::from_millis(1))))
            .build()
    }
}

/// What a response's status means for a download under way.
enum Begin {
    /// The file does not exist.
    Missing,
    /// The server failed (5xx); worth asking again.
    ServerError(u16),
    /// A body follows, from the start or from where the last attempt stopped.
    Body,
}

/// One download across its attempts: where it got to and how long it is.
struct Transfer<'a> {
    url: &'a str,
    limit: u64,
    done: Fetched,
    total: Option<u64>,
}

impl Transfer<'_> {
    fn body_err(&self, what: &str, source: std::io::Error) -> HttpError {
        HttpError::Body {
            url: self.url.to_owned(),
            what: what.to_owned(),
            source,
        }
    }

    fn too_large(&self) -> HttpError {
        HttpError::TooLarge {
            url: self.url.to_owned(),
            limit: self.limit,
        }
    }

    /// Reads a response's status: a resumed part, a whole body again (the
    /// sink starts over), a missing file, a server error or a refusal.
    fn begin(&mut self, status: u16, sink: &mut dyn DownloadSink) -> Result<Begin, HttpError> {
        let url = self.url;
        match status {
            404 | 410 if self.done.bytes == 0 => Ok(Begin::Missing),
            206 if self.done.bytes > 0 => {
                self.done.resumed += 1;
                Ok(Begin::Body)
            }
            200 if self.done.bytes > 0 => {
                tracing::info!(url, "the server does not resume downloads; starting again");
                sink.restart()
                    .map_err(|e| self.body_err("cannot start the download again", e))?;
                self.done.bytes = 0;
                Ok(Begin::Body)
            }
            200 => Ok(Begin::Body),
            500.. => Ok(Begin::ServerError(status)),
            _ => Err(HttpError::Status {
                url: url.to_owned(),
                status,
            }),
        }
    }

    /// Copies the body into `sink` up to the limit; the error that broke it
    /// off (a short body is one), or `None` when it is all there.
    fn stream(
        &mut self,
        resp: ureq::http::Response<ureq::Body>,
        sink: &mut dyn DownloadSink,
    ) -> Result<Option<ureq::Error>, HttpError> {
        if let Some(n) = resp.body().content_length() {
            self.total = Some(self.done.bytes.saturating_add(n));
        }
        if self.total.is_some_and(|t| t > self.limit) {
            return Err(self.too_large());
        }
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let failure = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    if self.done.bytes.saturating_add(n as u64) > self.limit {
                        return Err(self.too_large());
                    }
                    sink.write(&buf[..n])
                        .map_err(|e| self.body_err("cannot store the download", e))?;
                    self.done.bytes += n as u64;
                    sink.progress(self.done.bytes, self.total);
                }
                Err(e) => break Some(e),
            }
        };
        Ok(match (failure, self.total) {
            (None, Some(t)) if self.done.bytes < t => Some(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the body ended at {} of {t} bytes", self.done.bytes),
            ))),
            (None, _) => None,
            (Some(e), _) => Some(ureq::Error::Io(e)),
        })
    }

    /// The error a download ends with: a short body is `Truncated`.
    fn give_up(&self, failure: ureq::Error, attempts: u32) -> HttpError {
        if let (Some(t), ureq::Error::Io(io)) = (self.total, &failure)
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return HttpError::Truncated {
                url: self.url.to_owned(),
                got: self.done.bytes,
                expected: t,
            };
        }
        HttpError::Fetch {
            url: self.url.to_owned(),
            attempts,
            source: failure,
        }
    }
}
