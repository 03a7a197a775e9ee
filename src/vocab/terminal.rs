//! Text for a terminal: what an attacker wrote, shown and never obeyed.
//!
//! Log lines, ban reasons sent by a client, and names read back from the ledger may carry
//! control characters. Printed raw, an ESC starts a sequence the terminal executes (an OSC
//! retitles the window or plants a hyperlink, a CSI clears the screen or moves the cursor) and
//! a CR returns to the start of the line so that what follows overwrites what came before: a
//! report could show a different client than the one banned. [`visible`] replaces each such
//! character by an escape a reader can see (`\x1b`, `\r`, `\u{9b}`), so the text prints as
//! one inert line. JSON output needs none of this: JSON escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: C0 controls but tab, DEL, C1 controls, and
/// the Unicode bidirectional overrides and isolates, which reorder how the text around them
/// is displayed (an address could read backwards).
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character shown as a visible escape: `\r`, `\n`, `\x1b` for C0
/// and DEL, `\u{9b}` for C1 and the bidirectional controls. Borrowed when there is nothing to
/// replace, which is nearly always.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if is_unsafe(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`visible`] as an owned string, for table cells.
pub fn cell(text: &str) -> String {
    visible(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert!(matches!(visible("203.0.113.7 GET /\tok"), Cow::Borrowed(_)));
        assert_eq!(
            visible("x\u{1b}]0;owned\u{7}\u{1b}]8;;http://203.0.113.1/\u{1b}\\y\rz"),
            r"x\x1b]0;owned\x07\x1b]8;;http://203.0.113.1/\x1b\y\rz"
        );
        assert_eq!(visible("a\u{0}b\u{7f}c\nd"), r"a\x00b\x7fc\nd");
        assert_eq!(visible("\u{9b}31m\u{85}"), r"\u{9b}31m\u{85}");
        assert_eq!(visible("1.2.3.4\u{202e}4.3.2.1"), r"1.2.3.4\u{202e}4.3.2.1");
        // Other text, including non-ASCII, is untouched.
        assert_eq!(visible("Zürich → 東京"), "Zürich → 東京");
    }
}
