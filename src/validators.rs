//! [`Validators`]: what identifies one version of a resource (an entity tag, a modification
//! time), as a source reports it and as the Range server sends it.

use std::fs::Metadata;
use std::time::{SystemTime, UNIX_EPOCH};

/// What identifies the version of a resource a buffer holds: its entity tag and its
/// modification time, when the source knows them.
///
/// A [`RangeSource`](crate::RangeSource) reports them with
/// [`validators`](crate::RangeSource::validators) (a file: its length, modification time and
/// inode; a URL: the upstream's `ETag` and `Last-Modified`; an object: its store's), and
/// [`StreamBuffer::validators`](crate::StreamBuffer::validators) gives them back. The Range
/// server sends them as `ETag` and `Last-Modified` and answers conditional requests with them.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use sparsebuf::Validators;
///
/// let v = Validators::new()
///     .etag("\"v1\"")
///     .last_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// assert!(v.strong_etag().is_some());
/// assert!(Validators::new().etag("W/\"v1\"").strong_etag().is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Validators {
    /// The entity tag, quotes included: `"abc"` (strong) or `W/"abc"` (weak).
    pub etag: Option<String>,
    /// When the resource last changed.
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    /// No validator.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the entity tag `tag` (quotes included).
    pub fn etag(mut self, tag: impl Into<String>) -> Self {
        self.etag = Some(tag.into());
        self
    }

    /// With the modification time `at`.
    pub fn last_modified(mut self, at: SystemTime) -> Self {
        self.last_modified = Some(at);
        self
    }

    /// The entity tag if it is strong (not `W/`): only a strong tag says that two answers hold
    /// the same bytes.
    pub fn strong_etag(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|tag| !tag.starts_with("W/") && tag.len() >= 2 && tag.starts_with('"'))
    }

    /// Whether there is neither a tag nor a time.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// A file's validators: a strong tag made of its length, modification time (to the
    /// nanosecond) and inode, so that it survives a restart of the program and changes when the
    /// file is replaced or rewritten; and its modification time.
    pub fn of_file(metadata: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let modified = metadata.modified().ok();
        let nanos = modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let tag = format!("\"{:x}-{:x}-{:x}\"", metadata.len(), nanos, metadata.ino());
        Validators {
            etag: Some(tag),
            last_modified: modified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_tags_are_quoted_and_not_weak() {
        assert_eq!(Validators::new().etag("\"a\"").strong_etag(), Some("\"a\""));
        for tag in ["W/\"a\"", "a", "", "\""] {
            assert_eq!(Validators::new().etag(tag).strong_etag(), None, "{tag}");
        }
        assert!(Validators::new().is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads file metadata")]
    fn a_files_tag_changes_when_it_is_rewritten() {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"one").unwrap();
        let first = Validators::of_file(&file.as_file().metadata().unwrap());
        assert!(first.strong_etag().is_some());
        assert_eq!(
            first,
            Validators::of_file(&file.as_file().metadata().unwrap())
        );
        file.write_all(b"two").unwrap();
        let second = Validators::of_file(&file.as_file().metadata().unwrap());
        assert_ne!(first.etag, second.etag);
    }
}
