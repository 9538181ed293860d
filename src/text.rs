//! Text from elsewhere (a peer, a file name) made safe to print on one line.
//!
//! Anything a remote peer or a file name controls can hold a newline (a forged second
//! log line), an escape sequence (a terminal that retitles itself, moves its cursor or
//! worse) or a bidirectional override (a name that reads differently than it is). Every
//! log line and every terminal line that shows such text goes through one of these.

use std::borrow::Cow;

/// Whether `c` must not reach a log or a terminal as it is: control characters (C0, DEL
/// and C1), the Unicode line and paragraph separators, the bidirectional marks,
/// embeddings, overrides and isolates, and the zero-width characters.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
    }
}

/// A name as a log line, a terminal and a listing (PROTOCOL.md §3.9) show it: a
/// backslash as `\\`, a newline as `\n`, a tab as `\t`, a carriage return as `\r`, any
/// other control character as `\xHH` and a bidirectional control as `\u{HHHH}`.
/// Reversible, so two different names never look alike; one name is always one line.
pub fn escape(name: &str) -> Cow<'_, str> {
    if !name.chars().any(|c| c == '\\' || unsafe_char(c)) {
        return name.into();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.into()
}

/// Text that may already hold escapes (a server's message, a listing line) made safe
/// to print: control and bidirectional characters are escaped as by [`escape`], and
/// everything else, backslashes included, is left as it is.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_on_one_line_and_inert() {
        assert_eq!(escape("plain name.txt"), "plain name.txt");
        assert_eq!(escape("a\nb\tc\\d\u{7}"), "a\\nb\\tc\\\\d\\x07");
        assert_eq!(escape("x\r\u{1b}[2J\u{9b}"), "x\\r\\x1b[2J\\x9b");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("a\u{2028}b\u{200b}"), "a\\u{2028}b\\u{200b}");
        // Reversible: a name that looks like an escape is shown with its backslash doubled.
        assert_ne!(escape("a\\nb"), escape("a\nb"));
    }

    #[test]
    fn sanitize_keeps_backslashes() {
        assert_eq!(sanitize("no\\nchange"), "no\\nchange");
        assert_eq!(
            sanitize("msg\n\u{1b}]0;pwned\u{7}"),
            "msg\\n\\x1b]0;pwned\\x07"
        );
    }
}
