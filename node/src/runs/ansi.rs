//! What a terminal would show of one line of a command's output: colour and cursor escape
//! sequences removed, and of a line a progress bar rewrote with `\r`, only its last state.
//! Summaries (`test result: ...`, pytest's `== 1 passed in 0.01s ==`) are matched on this.

use std::borrow::Cow;

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';

/// `line` without ANSI escape sequences: CSI (`ESC [ ... final`, colours and cursor moves),
/// string sequences (OSC `ESC ] ... BEL|ESC \`, DCS, APC, PM, SOS: hyperlinks, titles) and
/// the short escapes (`ESC ( B`, `ESC 7`). A sequence cut off by the end of the line is
/// dropped up to there.
pub fn strip_ansi(line: &str) -> Cow<'_, str> {
    if !line.contains(ESC) {
        return Cow::Borrowed(line);
    }
    let mut shown = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ESC {
            shown.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('[') => {
                chars.next();
                // Parameter and intermediate bytes, then one final byte; anything else ends
                // a malformed sequence and is kept as text.
                while let Some(&c) = chars.peek() {
                    if ('\u{20}'..='\u{3f}').contains(&c) {
                        chars.next();
                    } else {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            Some(']' | 'P' | 'X' | '^' | '_') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == BEL {
                        break;
                    }
                    if c == ESC {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
                // `ESC ( B` and friends: intermediate bytes, then one final byte.
                while chars
                    .peek()
                    .is_some_and(|c| ('\u{20}'..='\u{2f}').contains(c))
                {
                    chars.next();
                }
                chars.next();
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    Cow::Owned(shown)
}

/// What a terminal shows of `line`: without escape sequences, without a trailing `\r` (CRLF
/// output) and, where a progress bar redrew it with `\r`, only the last drawing.
pub fn visible(line: &str) -> Cow<'_, str> {
    let line = line.trim_end_matches(['\r', '\n']);
    let last_drawing = match line.rfind('\r') {
        Some(i) => &line[i + 1..],
        None => line,
    };
    strip_ansi(last_drawing)
}

#[cfg(test)]
mod tests {
    use super::{strip_ansi, visible};

    #[test]
    fn colours_cursor_moves_and_hyperlinks_are_removed() {
        for (raw, shown) in [
            ("plain", "plain"),
            ("\u{1b}[1m\u{1b}[33mwarning\u{1b}[0m: x", "warning: x"),
            ("\u{1b}[38;5;208morange\u{1b}[m", "orange"),
            ("\u{1b}[2K\u{1b}[1Gdone", "done"),
            ("\u{1b}]8;;https://x\u{7}link\u{1b}]8;;\u{7}", "link"),
            ("\u{1b}]0;title\u{1b}\\text", "text"),
            ("\u{1b}(Bcharset", "charset"),
            ("\u{1b}7saved\u{1b}8", "saved"),
            ("cut off \u{1b}[38;5", "cut off "),
            ("cut off \u{1b}", "cut off "),
            (
                "\u{1b}[31;1m==== 1 failed in 0.1s ====\u{1b}[0m",
                "==== 1 failed in 0.1s ====",
            ),
            ("ünïcødé \u{1b}[32m✓\u{1b}[0m", "ünïcødé ✓"),
        ] {
            assert_eq!(strip_ansi(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn only_the_last_drawing_of_a_progress_line_is_shown() {
        assert_eq!(
            visible("Building [=>  ] 1/3\rBuilding [===] 3/3"),
            "Building [===] 3/3"
        );
        assert_eq!(visible("test result: ok.\r\n"), "test result: ok.");
        assert_eq!(visible("\r"), "");
        assert_eq!(visible(""), "");
    }
}
