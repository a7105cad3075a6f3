//! A server of many resources over a [`Cache`]: a request's path names a file under a
//! directory, or a resource under a base URL (a caching proxy); each is a buffer of the cache,
//! opened once and shared by every client.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use hyper::header::HeaderValue;
use hyper::{Response, StatusCode, Uri};

use crate::cache::Cache;
use crate::net::body::ServeBody;
use crate::net::respond::{failure, plain, Resource};
use crate::validators::Validators;

/// Where a routed server's resources come from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// Files under this directory (canonical).
    Dir(PathBuf),
    /// Resources under this base URL (no trailing `/`).
    #[cfg(feature = "client")]
    Url(String),
}

/// A cache and where its resources come from.
#[derive(Clone)]
pub(crate) struct Routes {
    pub(crate) cache: Cache,
    pub(crate) origin: Origin,
}

/// What a request's path leads to.
pub(crate) enum Found {
    Resource(Resource),
    /// An answer without a resource: `404`, `403`, an upstream's status.
    Answer(Refusal),
}

/// A status and the line that says why.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) why: String,
}

impl Refusal {
    fn new(status: StatusCode, why: impl Into<String>) -> Refusal {
        Refusal {
            status,
            why: why.into(),
        }
    }

    /// For a source that failed: `502`, or `504` for a timeout.
    fn failed(error: &io::Error) -> Refusal {
        let (status, why) = failure(error);
        Refusal { status, why }
    }

    pub(crate) fn response(self) -> Response<ServeBody> {
        plain(self.status, self.why)
    }
}

impl Routes {
    /// The resource at `uri`, opened in the cache (blocking: a file is opened, an upstream is
    /// probed; the server calls it off its runtime's threads).
    pub(crate) fn resolve(&self, uri: &Uri) -> Found {
        let segments = match segments(uri.path()) {
            Ok(segments) => segments,
            Err(answer) => return Found::Answer(answer),
        };
        match &self.origin {
            Origin::Dir(root) => self.file(root, &segments),
            #[cfg(feature = "client")]
            Origin::Url(base) => self.url(base, uri),
        }
    }

    fn file(&self, root: &Path, segments: &[Vec<u8>]) -> Found {
        use std::os::unix::ffi::OsStrExt;
        let mut path = root.to_path_buf();
        for segment in segments {
            path.push(std::ffi::OsStr::from_bytes(segment));
        }
        let not_found = || Found::Answer(Refusal::new(StatusCode::NOT_FOUND, "no such file\n"));
        // Symbolic links are followed, but not out of the directory.
        let Ok(real) = std::fs::canonicalize(&path) else {
            return not_found();
        };
        if !real.starts_with(root) {
            let why = "the path leads out of the directory served\n";
            return Found::Answer(Refusal::new(StatusCode::FORBIDDEN, why));
        }
        let Ok(metadata) = std::fs::metadata(&real) else {
            return not_found();
        };
        if !metadata.is_file() {
            return not_found();
        }
        let key = key_of(&real);
        // A file that changed since it was cached is read anew.
        let now = Validators::of_file(&metadata);
        if let Some(cached) = self.cache.get(&key) {
            if cached.validators() != &now {
                self.cache.remove(&key);
            }
        }
        let opened = self.cache.open_ranged(&key, || std::fs::File::open(&real));
        match opened {
            Ok(buffer) => {
                let guessed = guess(&real.to_string_lossy());
                Found::Resource(Resource::new(buffer, guessed))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => not_found(),
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => Found::Answer(
                Refusal::new(StatusCode::FORBIDDEN, "the file cannot be read\n"),
            ),
            Err(error) => Found::Answer(Refusal::failed(&error)),
        }
    }

    #[cfg(feature = "client")]
    fn url(&self, base: &str, uri: &Uri) -> Found {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{base}{path_and_query}");
        // A buffer whose stream failed, or whose upstream changed, is opened anew: the next
        // request heals what the last one saw fail.
        if let Some(cached) = self.cache.get(&url) {
            if cached.shared().is_stale() {
                self.cache.remove(&url);
            }
        }
        match self.cache.open_url(&url) {
            Ok(buffer) => {
                // The upstream's own type first; else the extension's.
                let guessed = match buffer.content_type() {
                    Some(_) => None,
                    None => guess(uri.path()),
                };
                Found::Resource(Resource::new(buffer, guessed))
            }
            Err(error) => Found::Answer(upstream_failed(&error)),
        }
    }
}

/// The answer for an upstream that could not be opened: its own status when it sent one (a
/// `404` stays a `404`), else `502`/`504`.
#[cfg(feature = "client")]
fn upstream_failed(error: &io::Error) -> Refusal {
    match crate::fanout::retry::HttpStatus::of(error) {
        Some(status) => {
            let code = StatusCode::from_u16(status.status).unwrap_or(StatusCode::BAD_GATEWAY);
            Refusal::new(code, format!("{}\n", status.message))
        }
        None => Refusal::failed(error),
    }
}

/// The decoded segments of a request's path; `404` for an encoded `/` or a NUL, `403` for a
/// `..` (no path leaves the directory or the base URL).
fn segments(path: &str) -> Result<Vec<Vec<u8>>, Refusal> {
    let mut out = Vec::new();
    for raw in path.split('/') {
        let segment = percent_decode(raw)
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "a malformed %-escape\n"))?;
        match segment.as_slice() {
            b"" | b"." => continue,
            b".." => {
                let why = "a path with `..` is not served\n";
                return Err(Refusal::new(StatusCode::FORBIDDEN, why));
            }
            _ if segment.contains(&b'/') || segment.contains(&0) => {
                let why = "an encoded `/` or NUL in a path is not served\n";
                return Err(Refusal::new(StatusCode::NOT_FOUND, why));
            }
            _ => out.push(segment),
        }
    }
    Ok(out)
}

/// `%XX` escapes decoded; `None` for a malformed one.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A file's key in the cache: its canonical path, with bytes that are not printable ASCII
/// (and `%`) escaped, so that two names never share a key.
fn key_of(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut key = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' || byte == b' ' {
            key.push(byte as char);
        } else {
            let _ = write!(key, "%{byte:02X}");
        }
    }
    key
}

/// The media type of a name by its extension, if it has a known one.
pub(crate) fn guess(name: &str) -> Option<HeaderValue> {
    let guessed = mime_guess::from_path(name).first()?;
    HeaderValue::from_str(guessed.essence_str()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_and_escapes_refused() {
        let ok = |p: &str| segments(p).ok();
        assert_eq!(ok("/a/b%20c"), Some(vec![b"a".to_vec(), b"b c".to_vec()]));
        assert_eq!(ok("/a/./b//"), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(ok("/%ff"), Some(vec![vec![0xff]]));
        let status = |p: &str| segments(p).err().map(|r| r.status);
        assert_eq!(status("/a/../../etc/passwd"), Some(StatusCode::FORBIDDEN));
        assert_eq!(status("/a/%2e%2e/b"), Some(StatusCode::FORBIDDEN));
        assert_eq!(status("/a%2f..%2fb"), Some(StatusCode::NOT_FOUND));
        assert_eq!(status("/a%2Fb"), Some(StatusCode::NOT_FOUND));
        assert_eq!(status("/a%00"), Some(StatusCode::NOT_FOUND));
        assert_eq!(status("/a%zz"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status("/a%2"), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn keys_keep_names_apart() {
        use std::os::unix::ffi::OsStrExt;
        let raw = Path::new(std::ffi::OsStr::from_bytes(b"/d/\xff%FF"));
        assert_eq!(key_of(raw), "file:///d/%FF%25FF");
        assert_eq!(key_of(Path::new("/d/a b.mp4")), "file:///d/a b.mp4");
    }

    #[test]
    fn types_come_from_extensions() {
        assert_eq!(guess("/clip.mp4").unwrap(), "video/mp4");
        assert_eq!(guess("/x/song.MP3").unwrap(), "audio/mpeg");
        assert!(guess("/noext").is_none());
    }
}
