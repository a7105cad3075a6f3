//! HTTP `Range` requests (RFC 9110 §14): parsing a `Range` header, and resolving its ranges
//! against a length. Pure functions, for the server (`serve.rs`).

use std::ops::Range;

/// The most ranges one request may ask for; a longer list is ignored (the whole is sent), as
/// RFC 9110 §14.2 allows, so a request cannot make the server cut thousands of parts.
const MAX_RANGES: usize = 64;

/// One range of a `Range: bytes=...` header, before the length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spec {
    /// `first-last` (`last` included).
    Closed(u64, u64),
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// Parses a `Range` header value. `None`: not a valid `bytes` range set (or too many ranges),
/// which a server answers as if there were no `Range` header.
pub(crate) fn parse(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // Empty elements of the list are allowed (`bytes=0-1,,5-6`), but at least one range.
    for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        let spec = match (first.is_empty(), last.is_empty()) {
            (true, true) => return None,
            (true, false) => Spec::Suffix(number(last)?),
            (false, true) => Spec::From(number(first)?),
            (false, false) => {
                let (first, last) = (number(first)?, number(last)?);
                if last < first {
                    return None;
                }
                Spec::Closed(first, last)
            }
        };
        specs.push(spec);
    }
    (!specs.is_empty() && specs.len() <= MAX_RANGES).then_some(specs)
}

/// Digits only (no sign, no space inside); `None` past `u64::MAX`.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl Spec {
    /// The bytes this range selects of a representation of `len` bytes; `None` if none
    /// (unsatisfiable). A suffix longer than `len` selects the whole (§14.1.2).
    pub(crate) fn resolve(self, len: u64) -> Option<Range<u64>> {
        let range = match self {
            Spec::Closed(first, last) => first..last.saturating_add(1).min(len),
            Spec::From(first) => first..len,
            Spec::Suffix(n) => len.saturating_sub(n)..len,
        };
        (range.start < range.end).then_some(range)
    }

    /// Whether this range reads from 0 to the end, whatever the length (`bytes=0-`).
    pub(crate) fn is_whole(self) -> bool {
        self == Spec::From(0)
    }
}

/// The satisfiable ranges of `specs` for `len` bytes, in the order asked, with overlapping
/// ones merged (into the place of the first); empty if none is satisfiable.
pub(crate) fn resolve(specs: &[Spec], len: u64) -> Vec<Range<u64>> {
    let overlap = |a: &Range<u64>, b: &Range<u64>| a.start < b.end && b.start < a.end;
    let mut out: Vec<Range<u64>> = Vec::new();
    for mut range in specs.iter().filter_map(|s| s.resolve(len)) {
        // Take out every range it overlaps (growing it, so repeat), and put the union where
        // the first of them was.
        let mut place = out.len();
        while let Some(i) = out.iter().position(|r| overlap(r, &range)) {
            let other = out.remove(i);
            range = other.start.min(range.start)..other.end.max(range.end);
            place = place.min(i);
        }
        out.insert(place.min(out.len()), range);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_of_rfc_9110() {
        use Spec::*;
        assert_eq!(parse("bytes=0-499"), Some(vec![Closed(0, 499)]));
        assert_eq!(parse("bytes=9500-"), Some(vec![From(9500)]));
        assert_eq!(parse("bytes=-500"), Some(vec![Suffix(500)]));
        assert_eq!(
            parse("Bytes = 0-0 , -1,,  5-"),
            Some(vec![Closed(0, 0), Suffix(1), From(5)])
        );
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=5-4",
            "bytes=a-b",
            "bytes=1-2-3",
            "items=0-1",
            "bytes 0-1",
            "bytes=+1-2",
            "bytes=0-18446744073709551616",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let many = format!("bytes={}", vec!["0-1"; MAX_RANGES + 1].join(","));
        assert_eq!(parse(&many), None);
    }

    #[test]
    fn resolves_against_a_length() {
        use Spec::*;
        assert_eq!(Closed(0, 499).resolve(100), Some(0..100));
        assert_eq!(Closed(100, 200).resolve(100), None);
        assert_eq!(Closed(5, u64::MAX).resolve(100), Some(5..100));
        assert_eq!(From(99).resolve(100), Some(99..100));
        assert_eq!(From(100).resolve(100), None);
        assert_eq!(Suffix(500).resolve(100), Some(0..100));
        assert_eq!(Suffix(0).resolve(100), None);
        assert_eq!(Suffix(1).resolve(0), None);
        assert!(From(0).is_whole() && !From(1).is_whole());
    }

    #[test]
    fn keeps_the_order_asked_and_merges_only_overlaps() {
        use Spec::*;
        let specs = [Closed(50, 59), Closed(0, 9), Closed(55, 70), Suffix(5)];
        assert_eq!(resolve(&specs, 100), vec![50..71, 0..10, 95..100]);
        // Adjacent ranges are not overlapping: they stay apart.
        assert_eq!(
            resolve(&[Closed(0, 9), Closed(10, 19)], 100),
            vec![0..10, 10..20]
        );
        // A range that bridges two earlier ones merges all three.
        let bridge = [Closed(0, 9), Closed(20, 29), Closed(5, 25)];
        assert_eq!(resolve(&bridge, 100), vec![0..30]);
        assert_eq!(resolve(&[Closed(200, 300)], 100), Vec::<Range<u64>>::new());
    }
}
