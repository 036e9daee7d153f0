//! DTMF keys: the sixteen symbols a phone can send (`0-9 * # A-D`).
//!
//! Everything that carries keys — the collector, the matcher tables, the `match` CLI, later the
//! RFC 4733 detector — speaks this one type, so a key is validated once at the edge and never again.

use std::fmt;

/// One DTMF key. The discriminant is the RFC 4733 event code (0-9 digits, 10 `*`, 11 `#`, 12-15 A-D),
/// which is also the column index of the matcher's transition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Key {
    D0 = 0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Hash,
    A,
    B,
    C,
    D,
}

impl Key {
    /// All keys in event-code order.
    pub const ALL: [Key; 16] = [
        Key::D0,
        Key::D1,
        Key::D2,
        Key::D3,
        Key::D4,
        Key::D5,
        Key::D6,
        Key::D7,
        Key::D8,
        Key::D9,
        Key::Star,
        Key::Hash,
        Key::A,
        Key::B,
        Key::C,
        Key::D,
    ];

    /// The key for a character; lowercase `a-d` are accepted as A-D.
    pub fn from_char(c: char) -> Option<Key> {
        Some(match c {
            '0'..='9' => Key::ALL[c as usize - '0' as usize],
            '*' => Key::Star,
            '#' => Key::Hash,
            'A' | 'a' => Key::A,
            'B' | 'b' => Key::B,
            'C' | 'c' => Key::C,
            'D' | 'd' => Key::D,
            _ => return None,
        })
    }

    /// The key for an RFC 4733 event code (0-15).
    pub fn from_event_code(code: u8) -> Option<Key> {
        Key::ALL.get(code as usize).copied()
    }

    /// RFC 4733 event code, also the index into per-key tables.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_char(self) -> char {
        b"0123456789*#ABCD"[self as usize] as char
    }

    pub fn as_byte(self) -> u8 {
        self.as_char() as u8
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// Parses a string made only of keys (as in `takeback_dtmf: "*1"`), rejecting anything else.
pub fn parse_keys(s: &str) -> Result<Vec<Key>, String> {
    s.chars()
        .map(|c| {
            Key::from_char(c)
                .ok_or_else(|| format!("`{c}` is not a DTMF key (keys are 0-9 * # A-D)"))
        })
        .collect()
}

/// Renders keys as the string a person would type.
pub fn keys_to_string(keys: &[Key]) -> String {
    keys.iter().map(|k| k.as_char()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_char_and_event_code() {
        for (i, key) in Key::ALL.iter().enumerate() {
            assert_eq!(Key::from_char(key.as_char()), Some(*key));
            assert_eq!(Key::from_event_code(i as u8), Some(*key));
            assert_eq!(key.index(), i);
        }
        assert_eq!(Key::from_char('b'), Some(Key::B));
        assert_eq!(Key::from_char('x'), None);
        assert_eq!(Key::from_event_code(16), None);
    }

    #[test]
    fn parse_keys_names_the_bad_character() {
        assert_eq!(keys_to_string(&parse_keys("*1#").unwrap()), "*1#");
        assert!(parse_keys("*x").unwrap_err().contains("`x`"));
    }
}
