//! Conditional requests (feature `http`): `If-Match`, `If-Unmodified-Since`, `If-None-Match`,
//! `If-Modified-Since` in the order of RFC 9110 §13.2.2, and `If-Range` (§13.1.5), against the
//! served resource's strong entity tag and modification time.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderMap};

/// What the preconditions of a request say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on and answer the request.
    Proceed,
    /// `304 Not Modified` (a `GET` or `HEAD` whose client has this version).
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

/// The served version: its strong tag (quotes included) and its modification time.
pub(crate) struct Current<'a> {
    pub(crate) etag: &'a str,
    pub(crate) last_modified: Option<SystemTime>,
}

impl Current<'_> {
    /// RFC 9110 §13.2.2, steps 1 to 4, for a request with `headers`; `safe`: a `GET` or `HEAD`.
    pub(crate) fn evaluate(&self, headers: &HeaderMap, safe: bool) -> Verdict {
        if let Some(list) = joined(headers, header::IF_MATCH) {
            if !self.any_matches(&list, true) {
                return Verdict::Failed;
            }
        } else if let Some(date) = date(headers, header::IF_UNMODIFIED_SINCE) {
            if self.modified_after(date) {
                return Verdict::Failed;
            }
        }
        if let Some(list) = joined(headers, header::IF_NONE_MATCH) {
            if self.any_matches(&list, false) {
                return if safe {
                    Verdict::NotModified
                } else {
                    Verdict::Failed
                };
            }
        } else if let Some(date) = date(headers, header::IF_MODIFIED_SINCE).filter(|_| safe) {
            if self.last_modified.is_some() && !self.modified_after(date) {
                return Verdict::NotModified;
            }
        }
        Verdict::Proceed
    }

    /// Whether a `Range` is to be honoured: no `If-Range`, or one naming this version, by its
    /// strong tag or by exactly its modification time. A weak tag, another tag or another date
    /// means the whole resource is sent.
    pub(crate) fn if_range_holds(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::IF_RANGE) else {
            return true;
        };
        let Ok(value) = value.to_str() else {
            return false;
        };
        let value = value.trim();
        if value.starts_with('"') || value.starts_with("W/") {
            return value == self.etag;
        }
        match (httpdate::parse_http_date(value), self.last_modified) {
            (Ok(date), Some(modified)) => seconds(date) == seconds(modified),
            _ => false,
        }
    }

    /// Whether the list (`*` or entity tags) names this version: by strong comparison (`If-Match`)
    /// or weak (`If-None-Match`). A list that does not parse names nothing.
    fn any_matches(&self, list: &str, strong: bool) -> bool {
        if list.trim() == "*" {
            return true;
        }
        let Some(ours) = parse_tags(self.etag).and_then(|tags| tags.into_iter().next()) else {
            return false;
        };
        parse_tags(list).is_some_and(|tags| {
            tags.iter()
                .any(|tag| tag.opaque == ours.opaque && (!strong || (!tag.weak && !ours.weak)))
        })
    }

    fn modified_after(&self, date: SystemTime) -> bool {
        self.last_modified
            .is_some_and(|modified| seconds(modified) > seconds(date))
    }
}

/// Whole seconds since the epoch: HTTP dates have no finer resolution.
fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Every value of a header, joined with commas (a list may come in several lines).
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Vec<&str> = values.map(|v| v.to_str().unwrap_or("\u{0}")).collect();
    Some(parts.join(","))
}

/// A header's HTTP date, if it has one that parses (an invalid date is ignored, as RFC 9110
/// says).
fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// One entity tag of a list.
#[derive(Debug, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    opaque: &'a str,
}

/// The tags of `#entity-tag` (commas and spaces between them; a tag's quoted part may hold
/// commas); `None` if it is not such a list.
fn parse_tags(list: &str) -> Option<Vec<Tag<'_>>> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        let quoted = rest.strip_prefix('"')?;
        let end = quoted.find('"')?;
        tags.push(Tag {
            weak,
            opaque: &quoted[..end],
        });
        rest = &quoted[end + 1..];
        if !(rest.is_empty() || rest.starts_with([' ', '\t', ','])) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use std::time::Duration;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const MODIFIED: u64 = 1_700_000_000;

    fn current() -> Current<'static> {
        Current {
            etag: "\"v1\"",
            last_modified: Some(UNIX_EPOCH + Duration::from_millis(MODIFIED * 1000 + 700)),
        }
    }

    fn at(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn tag_lists_parse_with_commas_inside_tags_and_reject_junk() {
        let tags = parse_tags(r#""a", W/"b,c" ,"d""#).unwrap();
        assert_eq!(
            tags,
            [
                Tag {
                    weak: false,
                    opaque: "a"
                },
                Tag {
                    weak: true,
                    opaque: "b,c"
                },
                Tag {
                    weak: false,
                    opaque: "d"
                }
            ]
        );
        for junk in ["a", "\"a", "\"a\"b", "W/a"] {
            assert!(parse_tags(junk).is_none(), "{junk}");
        }
    }

    #[test]
    fn if_match_compares_strongly_and_fails_with_412() {
        use header::IF_MATCH;
        let c = current();
        let cases = [
            ("\"v1\"", Verdict::Proceed),
            ("*", Verdict::Proceed),
            ("\"x\", \"v1\"", Verdict::Proceed),
            ("\"other\"", Verdict::Failed),
            ("W/\"v1\"", Verdict::Failed),
            ("junk", Verdict::Failed),
        ];
        for (value, verdict) in cases {
            assert_eq!(
                c.evaluate(&headers(&[(IF_MATCH, value)]), true),
                verdict,
                "{value}"
            );
        }
        // Two header lines form one list.
        let two = headers(&[(IF_MATCH, "\"x\""), (IF_MATCH, "\"v1\"")]);
        assert_eq!(c.evaluate(&two, true), Verdict::Proceed);
    }

    #[test]
    fn if_none_match_compares_weakly_and_answers_304_or_412() {
        use header::IF_NONE_MATCH;
        let c = current();
        for value in ["\"v1\"", "W/\"v1\"", "*", "\"a\", \"v1\""] {
            let h = headers(&[(IF_NONE_MATCH, value)]);
            assert_eq!(c.evaluate(&h, true), Verdict::NotModified, "{value}");
            assert_eq!(c.evaluate(&h, false), Verdict::Failed, "{value}");
        }
        let other = headers(&[(IF_NONE_MATCH, "\"v2\"")]);
        assert_eq!(c.evaluate(&other, true), Verdict::Proceed);
    }

    #[test]
    fn dates_count_whole_seconds_and_give_way_to_tags() {
        use header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
        let c = current();
        let eval = |pairs: &[(header::HeaderName, &str)]| c.evaluate(&headers(pairs), true);
        assert_eq!(
            eval(&[(IF_MODIFIED_SINCE, &at(MODIFIED))]),
            Verdict::NotModified
        );
        assert_eq!(
            eval(&[(IF_MODIFIED_SINCE, &at(MODIFIED - 1))]),
            Verdict::Proceed
        );
        assert_eq!(
            eval(&[(IF_UNMODIFIED_SINCE, &at(MODIFIED))]),
            Verdict::Proceed
        );
        assert_eq!(
            eval(&[(IF_UNMODIFIED_SINCE, &at(MODIFIED - 1))]),
            Verdict::Failed
        );
        // An invalid date is ignored.
        assert_eq!(
            eval(&[(IF_UNMODIFIED_SINCE, "yesterday")]),
            Verdict::Proceed
        );
        // If-None-Match wins over If-Modified-Since, If-Match over If-Unmodified-Since.
        let old = at(MODIFIED - 1);
        assert_eq!(
            eval(&[
                (IF_NONE_MATCH, "\"v2\""),
                (IF_MODIFIED_SINCE, &at(MODIFIED))
            ]),
            Verdict::Proceed
        );
        assert_eq!(
            eval(&[(IF_MATCH, "\"v1\""), (IF_UNMODIFIED_SINCE, &old)]),
            Verdict::Proceed
        );
        // No known modification time: the dates say nothing.
        let untimed = Current {
            etag: "\"v1\"",
            last_modified: None,
        };
        let h = headers(&[(IF_MODIFIED_SINCE, &at(MODIFIED))]);
        assert_eq!(untimed.evaluate(&h, true), Verdict::Proceed);
    }

    #[test]
    fn if_range_takes_the_strong_tag_or_the_exact_date() {
        let c = current();
        let holds = |value: &str| c.if_range_holds(&headers(&[(header::IF_RANGE, value)]));
        assert!(c.if_range_holds(&HeaderMap::new()));
        assert!(holds("\"v1\""));
        assert!(!holds("W/\"v1\""));
        assert!(!holds("\"v2\""));
        assert!(holds(&at(MODIFIED)));
        assert!(!holds(&at(MODIFIED + 1)));
        assert!(!holds("not a date"));
    }
}
