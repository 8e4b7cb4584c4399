//! How much of anything a job (or a config) controls jobctl takes: one place, below every
//! layer, so that what the runner refuses and what the store and the views assume agree.
//! docs/channel.md and docs/config.md list them for users.

/// Output lines (stdout, stderr) longer than this are cut into pieces of about this size.
pub const MAX_LINE: usize = 64 * 1024;

/// A return value, as JSON text. Over it, the build fails, saying so.
pub const MAX_RETVAL: usize = 1024 * 1024;

/// A return value's nesting (arrays and objects within each other). JSON read back from
/// the database stops at 128; a deeper value, stored, would make every read of it fail.
pub const MAX_RETVAL_DEPTH: usize = 100;

/// How deep arrays and objects nest in `value` (a scalar: 0), counted without recursion.
pub fn json_depth(value: &serde_json::Value) -> usize {
    use serde_json::Value as J;
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let inner: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            J::Array(items) => Box::new(items.iter()),
            J::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(inner.map(|v| (v, depth + 1)));
    }
    deepest
}

/// One channel message (a line on fd 3): room for the largest return value and its
/// envelope. A longer line is left out whole, with a warning.
pub const MAX_MESSAGE: usize = MAX_RETVAL + 64 * 1024;

/// A progress group path: names deep.
pub const MAX_GROUP_DEPTH: usize = 16;

/// A progress group's name, in bytes.
pub const MAX_GROUP_NAME: usize = 256;

/// Distinct progress groups one build may report.
pub const MAX_GROUPS: usize = 10_000;

/// A progress status line, a skip reason: longer is cut (with `…`).
pub const MAX_STATUS: usize = 1024;

/// Log output of one build kept from its start (stdout, stderr; channel logs apart),
/// then a tail of [`LOG_TAIL`] bytes.
pub const LOG_HEAD: usize = 8 * 1024 * 1024;

/// See [`LOG_HEAD`].
pub const LOG_TAIL: usize = 2 * 1024 * 1024;

/// A job id, in characters.
pub const MAX_ID: usize = 200;

/// A job title, in characters.
pub const MAX_TITLE: usize = 1000;

/// The longest duration anything takes (a timeout, a retry delay, a retention, a grace):
/// 36,500 days, about a century. Longer is refused where it is written; a time that far
/// ahead still fits every clock and both databases.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

/// A worker's name, in characters.
pub const MAX_WORKER_NAME: usize = 100;

/// Jobs at once (`-j`) in one `jobctl build` or `jobctl worker`: the most any job's
/// `concurrency` may be. A worker records its slots with its heartbeat.
pub const MAX_SLOTS: usize = 10_000;

/// `d` after `at`, `d` taken as at most [`MAX_DURATION`]: a duration read back from a
/// build's snapshot (written by anything) cannot overflow the clock.
pub fn after(
    at: chrono::DateTime<chrono::Utc>,
    d: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    let d = chrono::Duration::from_std(d.min(MAX_DURATION)).expect("a century fits");
    at.checked_add_signed(d)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// `text` cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn cut_text(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// What a terminal would act on made visible: control characters (ESC, BEL, CR, the C1
/// range, DEL…) as `^[`-style or `\u{9b}`-style text, so that a job's output or a
/// config's title cannot move the cursor, retitle the window or write the clipboard
/// (OSC 52). Tabs and newlines stay.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    let harmful = |c: char| c.is_control() && c != '\t' && c != '\n';
    if !text.chars().any(harmful) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !harmful(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out.into()
}

/// `text` with every NUL made `␀` (U+2400): PostgreSQL's text and JSONB cannot hold NUL,
/// and SQLite's C strings end at one. Invalid UTF-8 is made U+FFFD when bytes become text.
pub fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    match text.contains('\0') {
        true => text.replace('\0', "\u{2400}").into(),
        false => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible() {
        assert_eq!(
            visible("a\x1b]52;c;aGk=\x07b\x1b[2J\r\u{9b}\x7f\tz\n"),
            "a^[]52;c;aGk=^Gb^[[2J^M\\u{9b}^?\tz\n"
        );
        assert!(matches!(visible("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn json_depth_counts_nesting() {
        use serde_json::json;
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
        let mut deep = json!(null);
        for _ in 0..10_000 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        assert_eq!(json_depth(&deep), 10_000);
        // Dropped without recursion: the test runs on a small stack.
        let mut items = match deep {
            serde_json::Value::Array(items) => items,
            _ => unreachable!(),
        };
        while let Some(serde_json::Value::Array(inner)) = items.pop() {
            items = inner;
        }
    }

    #[test]
    fn a_time_after_another_never_overflows() {
        let now = chrono::Utc::now();
        assert_eq!(
            after(now, std::time::Duration::from_secs(90)),
            now + chrono::Duration::seconds(90)
        );
        let far = after(now, std::time::Duration::MAX);
        assert_eq!(far, after(now, MAX_DURATION));
        assert!(far > now + chrono::Duration::days(36_499));
        assert_eq!(
            after(
                chrono::DateTime::<chrono::Utc>::MAX_UTC,
                std::time::Duration::from_secs(1)
            ),
            chrono::DateTime::<chrono::Utc>::MAX_UTC
        );
    }

    #[test]
    fn text_is_cut_at_a_character() {
        assert_eq!(cut_text("abc", 3), "abc");
        assert_eq!(cut_text("ééé", 5), "é…");
        assert!(cut_text(&"x".repeat(2000), MAX_STATUS).len() <= MAX_STATUS);
    }

    #[test]
    fn nul_becomes_a_symbol() {
        assert_eq!(without_nul("a\0b"), "a\u{2400}b");
    }
}
