//! Echoing untrusted text back in errors, logs and deny messages: control
//! and bidirectional-format characters escaped (so an input cannot forge a
//! line or reorder what a reader sees) and long values cut, with their length.

use std::fmt;

/// Longest part of a value echoed, in characters.
pub const MAX_ECHO_CHARS: usize = 200;
/// Longest part of a whole message echoed (one that quotes values), in characters.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// `s` as it is safe to show; see [`echo`].
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a> {
    text: &'a str,
    max_chars: usize,
}

/// Wraps an untrusted value for display.
pub fn echo(s: &str) -> Echo<'_> {
    Echo {
        text: s,
        max_chars: MAX_ECHO_CHARS,
    }
}

/// Wraps a message that quotes untrusted values, for a response or a log.
pub fn echo_message(s: &str) -> Echo<'_> {
    Echo {
        text: s,
        max_chars: MAX_MESSAGE_CHARS,
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.text.chars().enumerate() {
            if shown == self.max_chars {
                return write!(f, "… ({} bytes in all)", self.text.len());
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:04x}}}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_long_values_cut() {
        assert_eq!(
            echo("a\nstore OK\u{0}\u{202e}").to_string(),
            "a\\nstore OK\\u{0000}\\u{202e}"
        );
        let long = "x".repeat(1 << 20);
        let shown = echo(&long).to_string();
        assert!(shown.len() < 300, "{}", shown.len());
        assert!(shown.ends_with("… (1048576 bytes in all)"), "{shown}");
        assert_eq!(echo("plain").to_string(), "plain");
    }
}
